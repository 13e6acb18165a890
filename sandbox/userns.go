package sandbox

import (
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/idmap"
	"github.com/pier-runtime/pier/internal/proc"
)

// UserNamespace is what a pod asks of user namespaces: the CRI's
// userns_options. Mode is the CRI's name of the mode: POD (a user namespace
// of the pod's own, with these mappings) or NODE (the host's); validate
// refuses the others, and turns NODE into no UserNamespace at all.
type UserNamespace struct {
	Mode string      `json:"mode"`
	UIDs []IDMapping `json:"uids,omitempty"`
	GIDs []IDMapping `json:"gids,omitempty"`
}

// IDMapping maps Size ids from ContainerID in the pod to HostID on the node.
type IDMapping struct {
	ContainerID uint32 `json:"containerID"`
	HostID      uint32 `json:"hostID"`
	Size        uint32 `json:"size"`
}

// HostRoot is the host uid and gid that uid and gid 0 of the pod's user
// namespace map to (validate made sure they are mapped).
func (u *UserNamespace) HostRoot() (uid, gid uint32) {
	return u.UIDs[0].HostID, u.GIDs[0].HostID
}

// checkUserNamespace checks a pod's user namespace options as containerd
// and critest expect: mode POD with exactly one uid and one gid mapping
// that map container id 0, nothing else. Mode NODE becomes no
// UserNamespace. A pod with its own user namespace cannot share the host's
// network, IPC or PID namespace (Kubernetes refuses those too): its
// namespaces must be owned by its user namespace.
func checkUserNamespace(c *Config) error {
	u := c.UserNamespace
	if u == nil {
		return nil
	}
	switch u.Mode {
	case "NODE":
		if len(u.UIDs)+len(u.GIDs) > 0 {
			return fmt.Errorf("%w: user namespace mode NODE takes no id mappings", ErrInvalid)
		}
		c.UserNamespace = nil
		return nil
	case "POD":
	default:
		return fmt.Errorf("%w: user namespace mode %s is not supported: a pod has a user namespace of its own (POD) or the host's (NODE)", ErrInvalid, u.Mode)
	}
	if c.HostNetwork || c.HostIPC || c.HostPID {
		return fmt.Errorf("%w: a pod with a user namespace of its own cannot share the host's network, IPC or PID namespace", ErrInvalid)
	}
	for _, m := range []struct {
		what string
		ms   []IDMapping
	}{{"uid", u.UIDs}, {"gid", u.GIDs}} {
		if len(m.ms) != 1 {
			return fmt.Errorf("%w: user namespace: want exactly one %s mapping, got %d", ErrInvalid, m.what, len(m.ms))
		}
		if err := checkMapping(m.ms[0]); err != nil {
			return fmt.Errorf("%w: user namespace %s mapping %+v: %v", ErrInvalid, m.what, m.ms[0], err)
		}
	}
	return nil
}

// checkMapping checks one id mapping: it maps container id 0, to host ids
// that exist (not the invalid id 2^32-1) and are not the host's root.
func checkMapping(m IDMapping) error {
	switch {
	case m.Size == 0:
		return errors.New("its length is 0")
	case m.ContainerID != 0:
		return errors.New("container id 0 is not mapped")
	case uint64(m.HostID)+uint64(m.Size) > math.MaxUint32:
		return errors.New("host ids overflow")
	case m.HostID == 0:
		return errors.New("it maps the host's root")
	}
	return nil
}

func sysProcIDMaps(ms []IDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, len(ms))
	for i, m := range ms {
		out[i] = syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)}
	}
	return out
}

// makeUserNamespaces makes the pod's user namespace, and network, IPC and
// UTS namespaces owned by it, with the pod init (a process of pierd's
// cannot make a user namespace on one of its threads): it pins them under
// dir and sets the pod's hostname and sysctls in them. For a pod whose
// containers share a PID namespace, the init's PID namespace, owned by the
// user namespace too, is the pod's and the init stays; otherwise the init
// is ended once the namespaces are pinned.
func (m *Manager) makeUserNamespaces(sb *Sandbox, dir string) error {
	u := sb.Config.UserNamespace
	if err := m.startPodInit(sb, proc.PodInitOptions{UIDMappings: sysProcIDMaps(u.UIDs), GIDMappings: sysProcIDMaps(u.GIDs)}); err != nil {
		return err
	}
	pid, podInit := sb.InitPid, *sb
	if !sb.Config.PodPID {
		defer func() {
			if podInit.InitAlive() {
				unix.Kill(pid, unix.SIGKILL)
			}
			sb.InitPid, sb.InitStart, sb.InitBoot = 0, 0, ""
		}()
	}
	var err error
	sb.Namespaces, err = pinUserNamespaces(dir, pid, sb.Config.Hostname, sb.Config.Sysctls)
	return err
}

// UserNamespaces reports, with nil, that pods can have user namespaces of
// their own on this node: a user namespace can be made and mounts of
// Options.IDMapDirs can be idmapped with it (kernel 5.12 and later, and
// file systems that allow it; tmpfs from 6.3). It probes once.
func (m *Manager) UserNamespaces() error {
	m.usernsOnce.Do(func() { m.usernsErr = m.probeUserNamespaces() })
	return m.usernsErr
}

// probeMapping is the mapping of the user namespace UserNamespaces probes
// with; no file is made with it.
var probeMapping = []IDMapping{{ContainerID: 0, HostID: 1 << 30, Size: 65536}}

func (m *Manager) probeUserNamespaces() error {
	if m.opts.StartPodInit == nil {
		return errors.New("pier cannot start pod init processes here")
	}
	maps := sysProcIDMaps(probeMapping)
	pid, err := m.opts.StartPodInit("probe-user-namespaces", proc.PodInitOptions{UIDMappings: maps, GIDMappings: maps})
	if err != nil {
		return err
	}
	defer unix.Kill(pid, unix.SIGKILL)
	for _, dir := range m.opts.IDMapDirs {
		if err := idmap.Check(dir, filepath.Join("/proc", fmt.Sprint(pid), "ns", "user")); err != nil {
			return fmt.Errorf("idmapped mounts of %s: %w", dir, err)
		}
	}
	return nil
}

// usernsProbe caches UserNamespaces' answer.
type usernsProbe struct {
	usernsOnce sync.Once
	usernsErr  error
}
