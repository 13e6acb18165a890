package sandbox

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultInterface is the pod's interface that CNI attaches ("eth0"), the
// one kubelet's summary shows as the pod's.
const DefaultInterface = "eth0"

// Interface is one network interface's counters.
type Interface struct {
	Name                                  string
	RxBytes, RxPackets, RxErrors, RxDrops uint64
	TxBytes, TxPackets, TxErrors, TxDrops uint64
}

// maxNetDev bounds what is read of /proc/net/dev: a pod with thousands of
// interfaces reports the first ones.
const maxNetDev = 1 << 20

// Interfaces returns the counters of the interfaces in the network
// namespace of pod sb, but its loopback, from /proc/net/dev as a process
// in that namespace sees it. A pod on the host's network has none of its
// own: nil. candidates are pids that may be in the pod's namespace (its
// containers'): the first that is (its /proc/<pid>/ns/net is the pinned
// namespace) is read through, which costs one read; without one, the
// namespace is entered on a locked OS thread that is never unlocked (the
// Go runtime then ends the thread with the goroutine, so no other
// goroutine ever runs in the pod's namespace), which costs a thread.
func (sb *Sandbox) Interfaces(candidates ...int) ([]Interface, error) {
	netns := sb.Namespaces["net"]
	if sb.Config.HostNetwork || netns == "" {
		return nil, nil
	}
	var want unix.Stat_t
	if err := unix.Stat(netns, &want); err != nil {
		return nil, fmt.Errorf("the pod's network namespace: %w", err)
	}
	for _, pid := range candidates {
		var st unix.Stat_t
		ns := "/proc/" + strconv.Itoa(pid) + "/ns/net"
		if unix.Stat(ns, &st) != nil || st.Dev != want.Dev || st.Ino != want.Ino {
			continue
		}
		b, err := readLimited("/proc/" + strconv.Itoa(pid) + "/net/dev")
		// The process may have ended meanwhile, its pid taken by another
		// in another namespace: the namespace must still be the pod's.
		if err == nil && unix.Stat(ns, &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			return parseNetDev(b)
		}
	}
	var b []byte
	err := onThrowawayThread(func() (err error) {
		b, err = readNetDev(netns)
		return err
	})
	if err != nil {
		return nil, err
	}
	return parseNetDev(b)
}

func readNetDev(netns string) ([]byte, error) {
	fd, err := unix.Open(netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the pod's network namespace: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("enter the pod's network namespace %s: %w", netns, err)
	}
	return readLimited("/proc/thread-self/net/dev")
}

// readLimited reads a /proc file, its first maxNetDev bytes at most.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxNetDev))
}

// parseNetDev reads /proc/net/dev: two header lines, then per interface
// "name: rx bytes packets errs drop fifo frame compressed multicast, tx
// bytes packets errs drop fifo colls carrier compressed".
func parseNetDev(b []byte) ([]Interface, error) {
	var out []Interface
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 0; sc.Scan(); line++ {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if line < 2 || !ok {
			continue
		}
		name = strings.TrimSpace(name)
		f := strings.Fields(rest)
		if name == "lo" || len(f) < 16 {
			continue
		}
		var v [16]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/net/dev: interface %s: %v", name, err)
			}
			v[i] = n
		}
		out = append(out, Interface{Name: name,
			RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDrops: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDrops: v[11]})
	}
	return out, sc.Err()
}
