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
	if err := writeSysctls(procSys, sysctls); err != nil {
		return nil, err
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

// procSys is where sysctls are written.
const procSys = "/proc/sys"

// writeSysctls writes each sysctl to its file under root (procSys), which
// it opens with openat2 so that the path stays beneath root and follows no
// symbolic link, whatever the key says (keys are checked by validate too).
func writeSysctls(root string, sysctls map[string]string) error {
	if len(sysctls) == 0 {
		return nil
	}
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(dir)
	for key, value := range sysctls {
		if err := writeSysctl(dir, key, value); err != nil {
			return fmt.Errorf("%w: sysctl %s=%s: %v", ErrInvalid, key, value, err)
		}
	}
	return nil
}

func writeSysctl(dir int, key, value string) error {
	path, err := sysctlPath(key)
	if err != nil {
		return err
	}
	fd, err := unix.Openat2(dir, path, &unix.OpenHow{
		Flags:   unix.O_WRONLY | unix.O_TRUNC | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), path)
	_, err = f.Write([]byte(value))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// sysctlPath turns a sysctl key into its path under /proc/sys, as
// sysctl(8) and kubelet read keys: the first separator decides. Written
// with dots ("net.ipv4.conf.eth0/1.rp_filter"), a '/' stands for a dot in
// a name; written with slashes ("net/ipv4/conf/eth0.1/rp_filter"), it is
// the path already. The path must be relative, without empty, "." or ".."
// components.
func sysctlPath(key string) (string, error) {
	path := key
	if i := strings.IndexAny(key, "./"); i >= 0 && key[i] == '.' {
		path = strings.Map(func(r rune) rune {
			switch r {
			case '.':
				return '/'
			case '/':
				return '.'
			}
			return r
		}, key)
	}
	for _, c := range strings.Split(path, "/") {
		if c == "" || c == "." || c == ".." {
			return "", fmt.Errorf("not a sysctl name: empty, \".\" or \"..\" component in %q", path)
		}
		for _, r := range c {
			if r <= ' ' || r == 0x7f {
				return "", fmt.Errorf("not a sysctl name: control character or space in %q", path)
			}
		}
	}
	return path, nil
}

// sysctlNamespace names the namespace a sysctl (its path, sysctlPath)
// belongs to, or "" when it is not namespaced and so cannot be set for one
// pod.
func sysctlNamespace(path string) string {
	switch {
	case strings.HasPrefix(path, "net/"):
		return "net"
	case path == "kernel/sem", strings.HasPrefix(path, "kernel/shm"), strings.HasPrefix(path, "kernel/msg"), strings.HasPrefix(path, "fs/mqueue/"):
		return "ipc"
	case path == "kernel/hostname", path == "kernel/domainname":
		return "uts"
	}
	return ""
}
