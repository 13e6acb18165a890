// Package proc names processes for good and starts pod inits: a pid with
// its start time (StartTime) is one process, never a later one that reused
// the pid; IsShim tells pier's own shims and pod inits from others; a pod
// init (StartPodInit) is the PID 1 of a pod whose containers share a PID
// namespace, the monitor binary run as "pier-shim-monitor pod-init <pod>".
package proc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// StartPodInit starts a pod init, the pier-shim-monitor beside pier-shim
// (binary), as PID 1 of a new PID namespace,
// in a session of its own, for a pod whose containers share one PID
// namespace: it reaps the orphans of that namespace and sleeps until it is
// killed (SIGKILL; it ignores the usual termination signals, so that no
// container process can end the pod's namespace). It returns its pid as
// seen from the caller; containers join /proc/<pid>/ns/pid. It is the
// caller's child, reaped when it exits while the caller lives.
//
// The pod's id is on its command line, so that FindPodInits finds it when
// its pid was never recorded (pierd killed while it started it).
//
// With opts.UIDMappings, the pod init is made in a new user namespace with
// those mappings (see PodInitOptions).
func StartPodInit(binary, podID string, opts PodInitOptions) (int, error) {
	cmd := exec.Command(filepath.Join(filepath.Dir(binary), "pier-shim-monitor"), "pod-init", podID)
	cmd.Args[0] = "pier-shim" // as FindPodInits and IsShim know it
	cmd.Dir = "/"
	cmd.Env = []string{}
	// Namespaces of its own besides the PID namespace it is PID 1 of:
	// the containers of the pod see it, and must reach nothing of the host
	// through it (the monitor confines itself further). In a user
	// namespace, its network, IPC and UTS namespaces become the pod's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS}
	if len(opts.UIDMappings) > 0 {
		// It runs as root of the new namespace, which may not be able to
		// reach the binary through its directories: it runs the binary
		// through a descriptor opened here.
		bin, err := os.Open(cmd.Path)
		if err != nil {
			return 0, fmt.Errorf("start pod init: %w", err)
		}
		defer bin.Close()
		cmd.Path, cmd.ExtraFiles = "/proc/self/fd/3", []*os.File{bin}
		a := cmd.SysProcAttr
		a.Cloneflags |= syscall.CLONE_NEWUSER
		a.UidMappings, a.GidMappings = opts.UIDMappings, opts.GIDMappings
		// Containers joining the namespace set their groups.
		a.GidMappingsEnableSetgroups = true
		a.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start pod init: %w", err)
	}
	go cmd.Wait()
	return cmd.Process.Pid, nil
}

// PodInitOptions are the namespaces a pod init is made in besides its PID
// namespace.
type PodInitOptions struct {
	// UIDMappings and GIDMappings, when set, make the pod init in a new user
	// namespace with these mappings, as its root (the host uid container
	// uid 0 maps to). That namespace owns the init's PID namespace and new
	// network, IPC and UTS namespaces it is made in, which the pod's
	// containers join with it: an init that only makes them, for a pod
	// without a shared PID namespace, is ended once they are pinned.
	UIDMappings, GIDMappings []syscall.SysProcIDMap
}

// FindPodInits returns the pids of the pod inits started for pod podID.
func FindPodInits(podID string) []int {
	want := []byte("\x00pod-init\x00" + podID + "\x00")
	return Find("cmdline", func(b []byte) bool {
		return bytes.Contains(b, []byte("pier-shim")) && bytes.Contains(b, want)
	})
}

// Find returns the pids of the processes whose /proc/<pid>/<file>
// (cmdline, environ, ...) match accepts; the caller's own process is left
// out.
func Find(file string, match func(content []byte) bool) []int {
	files, _ := filepath.Glob("/proc/[0-9]*/" + file)
	var pids []int
	for _, f := range files {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if b, err := os.ReadFile(f); err == nil && match(b) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// BootID is this boot's id (/proc/sys/kernel/random/boot_id), "" when it
// cannot be read. A pid and start time name one process within a boot
// only: after a reboot, a recorded pair can match a new process. Records
// keep the boot ID beside them, and IsShimOf takes another boot's as gone.
func BootID() string { return bootID() }

// bootID reads the boot ID once; tests replace it.
var bootID = sync.OnceValue(func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
})

// SameBoot reports whether a record made in boot (its BootID) is of this
// boot. A record without one ("", made by a pier before boot IDs) counts
// as this boot's, as before: an upgrade loses no container; pid and start
// time still guard it, and a reboot empties /run, which pier checks first.
func SameBoot(boot string) bool {
	return boot == "" || boot == bootID()
}

// IsShimOf is IsShim for a process recorded in boot (BootID): a process
// of another boot is gone, whatever its pid and start time.
func IsShimOf(pid int, start uint64, boot string) bool {
	return SameBoot(boot) && IsShim(pid, start)
}

// IsShim reports whether pid is still the pier-shim (a container's or a
// pod init) that started at start (StartTime; 0: any pier-shim), so that a
// recorded pid is never signalled once it was reused, even by another shim.
func IsShim(pid int, start uint64) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(b, []byte("pier-shim")) {
		return false
	}
	return start == 0 || StartTime(pid) == start
}

// StartTime is when process pid started, in clock ticks since boot (field
// 22 of /proc/<pid>/stat), or 0 when it does not exist. With the pid it
// names one process for good.
func StartTime(pid int) uint64 {
	f := stat(pid)
	if len(f) < 20 {
		return 0
	}
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return start
}

// Ended reports whether process pid has exited: it is gone, or a zombie
// nobody has reaped yet.
func Ended(pid int) bool {
	f := stat(pid)
	return len(f) == 0 || f[0] == "Z" || f[0] == "X"
}

// stat is /proc/<pid>/stat from its field 3 (the state) on, or nil.
func stat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	// The command name, in parentheses, may hold anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}
