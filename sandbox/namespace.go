package sandbox

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/internal/beneath"
)

// nsKinds are the namespaces a pod may own, with their unshare flags. A
// user namespace is never unshared by pierd (a thread of a process with
// other threads cannot): the pod init makes it (pinUserNamespaces).
var nsKinds = []struct {
	name string
	flag int
}{
	{"net", unix.CLONE_NEWNET},
	{"ipc", unix.CLONE_NEWIPC},
	{"uts", unix.CLONE_NEWUTS},
	{"user", unix.CLONE_NEWUSER},
}

// onThrowawayThread runs f on a thread of its own, locked and never
// unlocked, so that the thread ends with f and no other goroutine ever
// runs in the namespaces f enters.
func onThrowawayThread(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ch <- f()
	}()
	return <-ch
}

// pinNamespaces creates the namespaces named in want ("net", "ipc",
// "uts") on a thread of its own, sets the hostname and sysctls inside them,
// and pins each by bind mount to dir/<name>. It returns the pinned paths.
func pinNamespaces(dir string, want map[string]bool, hostname string, sysctls map[string]string) (map[string]string, error) {
	flags := 0
	var names []string
	for _, k := range nsKinds {
		if want[k.name] && k.flag != unix.CLONE_NEWUSER {
			flags |= k.flag
			names = append(names, k.name)
		}
	}
	if flags == 0 {
		return nil, nil
	}
	var paths map[string]string
	err := onThrowawayThread(func() error {
		if err := unix.Unshare(flags); err != nil {
			return fmt.Errorf("create namespaces: %w", err)
		}
		if err := configure(want["uts"], hostname, sysctls); err != nil {
			return err
		}
		var err error
		paths, err = pin(dir, fmt.Sprintf("/proc/%d/task/%d/ns", os.Getpid(), unix.Gettid()), names)
		return err
	})
	if err != nil {
		unpinNamespaces(paths)
	}
	return paths, err
}

// pinUserNamespaces pins to dir/<name> the user, network, IPC and UTS
// namespaces of process pid, a pod init made in a user namespace of its
// own (proc.PodInitOptions), and sets the hostname and sysctls inside
// them from a thread that joins the network, IPC and UTS namespaces (host
// root may: it owns every user namespace). It returns the pinned paths.
func pinUserNamespaces(dir string, pid int, hostname string, sysctls map[string]string) (map[string]string, error) {
	paths, err := pin(dir, fmt.Sprintf("/proc/%d/ns", pid), []string{"user", "net", "ipc", "uts"})
	if err == nil {
		err = onThrowawayThread(func() error {
			for _, name := range []string{"net", "ipc", "uts"} {
				if err := join(paths[name]); err != nil {
					return err
				}
			}
			return configure(true, hostname, sysctls)
		})
	}
	if err != nil {
		unpinNamespaces(paths)
	}
	return paths, err
}

// join moves the calling thread into the namespace pinned at path.
func join(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, 0); err != nil {
		return fmt.Errorf("join %s: %w", path, err)
	}
	return nil
}

// configure sets the pod's hostname (when the pod has a UTS namespace of
// its own) and sysctls in the namespaces of the calling thread.
func configure(uts bool, hostname string, sysctls map[string]string) error {
	if uts && hostname != "" {
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			return fmt.Errorf("set hostname %q: %w", hostname, err)
		}
	}
	return writeSysctls(procSys, sysctls)
}

// pin bind-mounts each namespace names of the /proc ns directory from
// to dir/<name>, and returns the paths pinned, also on error.
func pin(dir, from string, names []string) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	paths := map[string]string{}
	for _, name := range names {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o400); err != nil {
			return paths, err
		}
		if err := unix.Mount(filepath.Join(from, name), p, "", unix.MS_BIND, ""); err != nil {
			os.Remove(p)
			return paths, fmt.Errorf("pin %s namespace: %w", name, err)
		}
		paths[name] = p
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

// writeSysctls writes each sysctl to its file under root (procSys),
// opened beneath root without following a symbolic link (beneath.OpenFile),
// whatever the key says (keys are checked by validate too).
func writeSysctls(root string, sysctls map[string]string) error {
	for key, value := range sysctls {
		if err := writeSysctl(root, key, value); err != nil {
			return fmt.Errorf("%w: sysctl %s=%s: %v", ErrInvalid, key, value, err)
		}
	}
	return nil
}

func writeSysctl(root, key, value string) error {
	path, err := sysctlPath(key)
	if err != nil {
		return err
	}
	f, err := beneath.OpenFile(root, path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
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
