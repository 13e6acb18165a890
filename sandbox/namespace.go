package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// nsKinds are the namespaces a pod may own, with their unshare flags.
var nsKinds = []struct {
	name string
	flag int
}{
	{"net", unix.CLONE_NEWNET},
	{"ipc", unix.CLONE_NEWIPC},
	{"uts", unix.CLONE_NEWUTS},
}

// pinNamespaces creates the namespaces named in want ("net", "ipc",
// "uts") on a thread of its own, sets the hostname and sysctls inside them,
// and pins each by bind mount to dir/<name>. It returns the pinned paths.
// The thread is thrown away afterwards, so no other goroutine ever runs in
// the pod's namespaces.
func pinNamespaces(dir string, want map[string]bool, hostname string, sysctls map[string]string) (map[string]string, error) {
	type result struct {
		paths map[string]string
		err   error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread exits with the goroutine.
		runtime.LockOSThread()
		paths, err := pinOnThisThread(dir, want, hostname, sysctls)
		ch <- result{paths, err}
	}()
	r := <-ch
	if r.err != nil {
		unpinNamespaces(r.paths)
	}
	return r.paths, r.err
}

func pinOnThisThread(dir string, want map[string]bool, hostname string, sysctls map[string]string) (map[string]string, error) {
	flags := 0
	for _, k := range nsKinds {
		if want[k.name] {
			flags |= k.flag
		}
	}
	if flags == 0 {
		return nil, nil
	}
	if err := unix.Unshare(flags); err != nil {
		return nil, fmt.Errorf("create namespaces: %w", err)
	}
	if want["uts"] && hostname != "" {
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			return nil, fmt.Errorf("set hostname %q: %w", hostname, err)
		}
	}
	for key, value := range sysctls {
		path := filepath.Join("/proc/sys", sysctlPath(key))
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return nil, fmt.Errorf("%w: sysctl %s=%s: %v", ErrInvalid, key, value, err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	paths := map[string]string{}
	self := fmt.Sprintf("/proc/%d/task/%d/ns/", os.Getpid(), unix.Gettid())
	for _, k := range nsKinds {
		if !want[k.name] {
			continue
		}
		pin := filepath.Join(dir, k.name)
		if err := os.WriteFile(pin, nil, 0o400); err != nil {
			return paths, err
		}
		if err := unix.Mount(self+k.name, pin, "", unix.MS_BIND, ""); err != nil {
			os.Remove(pin)
			return paths, fmt.Errorf("pin %s namespace: %w", k.name, err)
		}
		paths[k.name] = pin
	}
	return paths, nil
}

// unpinNamespaces unmounts and removes pinned namespace files. Missing
// pins are fine: it is called again after a crash.
func unpinNamespaces(paths map[string]string) error {
	var first error
	for _, p := range paths {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT && first == nil {
			first = fmt.Errorf("unpin %s: %w", p, err)
		}
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) && first == nil {
			first = err
		}
	}
	return first
}

// sysctlPath turns "net.ipv4.ip_forward" into "net/ipv4/ip_forward"; a name
// written with slashes (to keep dots, as in an interface name) is a path already.
func sysctlPath(key string) string {
	if strings.Contains(key, "/") {
		return key
	}
	return strings.ReplaceAll(key, ".", "/")
}

// sysctlNamespace names the namespace a sysctl belongs to, or "" when it is
// not namespaced and so cannot be set for one pod.
func sysctlNamespace(key string) string {
	k := strings.ReplaceAll(key, "/", ".")
	switch {
	case strings.HasPrefix(k, "net."):
		return "net"
	case k == "kernel.sem", strings.HasPrefix(k, "kernel.shm"), strings.HasPrefix(k, "kernel.msg"), strings.HasPrefix(k, "fs.mqueue."):
		return "ipc"
	case k == "kernel.hostname", k == "kernel.domainname":
		return "uts"
	}
	return ""
}
