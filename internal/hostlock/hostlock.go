// Package hostlock serialises the test binaries that change the host's
// network (bridges, veths, iptables rules, ip_forward). go test runs
// packages in parallel, and each of these checks that it left the host as
// it found it, so one must not run while another is half-way.
package hostlock

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Lock blocks until no other test binary holds the lock, and returns the
// function that releases it; the kernel releases it too if the process
// dies. The lock is taken on the temp directory itself, so that nothing is
// left behind.
func Lock() (unlock func(), err error) { return LockDir(os.TempDir()) }

// LockDir is Lock on another directory: one lock per directory.
func LockDir(dir string) (unlock func(), err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}
