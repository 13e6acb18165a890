package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/idmap"
	"github.com/pier-runtime/pier/internal/mountinfo"
	"github.com/pier-runtime/pier/sandbox"
)

// User namespaces.
//
// The containers of a pod with a user namespace of its own (userns_options
// mode POD) join it: their spec names the namespace the sandbox pinned and
// repeats its mappings (runc 1.1 wants them). runc 1.1 cannot make
// idmapped mounts, so pier makes them before it runs, with the pod's user
// namespace:
//
//   - The root file system is an overlay of idmapped clones of the image's
//     layers (idmapLayers), so that files owned by 0 in a layer are root's
//     in the container. overlayfs itself cannot be idmapped, nor use an
//     idmapped upper directory (it makes its work directory as the
//     mounter, host root, whom the mapping lacks), so the upper directory
//     is owned by the host uid and gid of the pod's root, as containerd
//     does: what the container writes there is stored as the host ids its
//     owner maps to (200000 for root, with 0 -> 200000). overlayfs keeps
//     private clones of its layers: pier's clones are unmounted once the
//     overlay is mounted.
//   - Every bind mount source (the CRI's volumes, the pod's hostname,
//     hosts, resolv.conf and /dev/shm) is cloned, idmapped, to
//     <state>/<id>/idmap/<n>, which the spec then binds
//     (prepareUserNamespace): on-disk owners show through the mapping, and
//     what the container's root writes is stored owned by 0, as on the
//     host. A source whose file system cannot be idmapped (proc, sysfs,
//     cgroupfs) is cloned as it is: its files show the host's owners,
//     those the mapping lacks as the overflow id (nobody), as in any user
//     namespace without idmapped mounts.
//
// runc's init runs inside the namespace, as the host uid root of the pod
// maps to, and reaches the root file system and the clones by path: the
// container's state and bundle directories (and idmap/) are made 0710 and
// owned by the host gid the pod's group 0 maps to, and the containers'
// state root and every directory above it must let others through (o+x),
// which idmapLayers checks. Removing the container unmounts everything
// under its state directory (destroy), also after a pierd crash.

// usernsDir holds a container's idmapped clones, under its state directory.
const usernsDir = "idmap"

// podUserNamespace is the user namespace the containers of pod join: the
// pod's own, or nil for the host's. A container's namespace options may
// repeat the pod's (kubelet sends them) but not ask for another.
func podUserNamespace(pod *sandbox.Sandbox, opts *runtimeapi.UserNamespace) (*sandbox.UserNamespace, error) {
	u := pod.Config.UserNamespace
	if u == nil {
		if opts != nil && (opts.GetMode() != runtimeapi.NamespaceMode_NODE || len(opts.GetUids())+len(opts.GetGids()) > 0) {
			return nil, fmt.Errorf("pod sandbox %s shares the host's user namespace: its containers cannot have user namespaces of their own (mode %v)", pod.ID, opts.GetMode())
		}
		return nil, nil
	}
	if opts != nil {
		if opts.GetMode() != runtimeapi.NamespaceMode_POD {
			return nil, fmt.Errorf("the containers of pod sandbox %s share its user namespace: mode %v is not possible", pod.ID, opts.GetMode())
		}
		if !sameMappings(opts.GetUids(), u.UIDs) || !sameMappings(opts.GetGids(), u.GIDs) {
			return nil, fmt.Errorf("the containers of pod sandbox %s share its user namespace: their id mappings must be the pod's", pod.ID)
		}
	}
	if pod.Namespaces["user"] == "" {
		return nil, fmt.Errorf("pod %s has no user namespace", pod.ID)
	}
	return u, nil
}

// sameMappings: the container's mappings, if any, are the pod's.
func sameMappings(c []*runtimeapi.IDMapping, pod []sandbox.IDMapping) bool {
	if len(c) == 0 {
		return true
	}
	return slices.EqualFunc(c, pod, func(a *runtimeapi.IDMapping, b sandbox.IDMapping) bool {
		return a.GetContainerId() == b.ContainerID && a.GetHostId() == b.HostID && a.GetLength() == b.Size
	})
}

// specIDMappings is the OCI form of id mappings.
func specIDMappings(ms []sandbox.IDMapping) []specs.LinuxIDMapping {
	out := make([]specs.LinuxIDMapping, len(ms))
	for i, m := range ms {
		out[i] = specs.LinuxIDMapping{ContainerID: m.ContainerID, HostID: m.HostID, Size: m.Size}
	}
	return out
}

// idmapLayers, for a container of a pod with a user namespace of its own,
// readies its directories (usernsDirs), gives its upper directory to the
// pod's root, and returns idmapped clones of the image's layers, to mount
// the overlay from, and a function that unmounts them once it is mounted.
// For other containers it returns the layers as they are.
func (m *Manager) idmapLayers(c *Container, pod *sandbox.Sandbox, layers []string) ([]string, func(), error) {
	u := pod.Config.UserNamespace
	if u == nil {
		return layers, func() {}, nil
	}
	uid, gid := u.HostRoot()
	clones, err := m.usernsDirs(c, uid, gid)
	if err != nil {
		return nil, nil, err
	}
	dir := filepath.Join(clones, "layers")
	release := func() {
		if mountinfo.UnmountUnder(dir) == nil {
			os.RemoveAll(dir)
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, nil, err
	}
	out := make([]string, len(layers))
	for i, l := range layers {
		out[i] = filepath.Join(dir, strconv.Itoa(i))
		if err := idmap.Clone(l, out[i], pod.Namespaces["user"], false); err != nil {
			release()
			return nil, nil, fmt.Errorf("idmap the image's layer %s: %w", l, err)
		}
	}
	if err := os.Chown(filepath.Join(m.dir(c.ID), "upper"), int(uid), int(gid)); err != nil {
		release()
		return nil, nil, err
	}
	return out, release, nil
}

// usernsDirs checks that the pod's root can reach the containers' state
// root, and makes the container's state and bundle directories, and the
// directory of its idmapped clones, which it returns, passable by the
// pod's group 0 (gid on the host) and no one else.
func (m *Manager) usernsDirs(c *Container, uid, gid uint32) (string, error) {
	if err := checkReachable(m.opts.State, uid, gid); err != nil {
		return "", err
	}
	clones := filepath.Join(m.stateDir(c.ID), usernsDir)
	if err := os.Mkdir(clones, 0o700); err != nil {
		return "", err
	}
	for _, d := range []string{m.stateDir(c.ID), m.bundle(c.ID), clones} {
		if err := os.Chown(d, 0, int(gid)); err != nil {
			return "", err
		}
		if err := os.Chmod(d, 0o710); err != nil {
			return "", err
		}
	}
	return clones, nil
}

// prepareUserNamespace, for a container of a pod with a user namespace of
// its own (nothing for others), clones each bind mount source of spec,
// idmapped where its file system allows it, under the container's state
// directory, and binds the clone instead. It returns notes worth logging.
func (m *Manager) prepareUserNamespace(c *Container, pod *sandbox.Sandbox, spec *specs.Spec) ([]string, error) {
	if pod.Config.UserNamespace == nil {
		return nil, nil
	}
	clones := filepath.Join(m.stateDir(c.ID), usernsDir)
	var notes []string
	for i := range spec.Mounts {
		mnt := &spec.Mounts[i]
		if mnt.Type != "bind" {
			continue
		}
		dst := filepath.Join(clones, strconv.Itoa(i))
		recursive := slices.Contains(mnt.Options, "rbind")
		err := idmap.Clone(mnt.Source, dst, pod.Namespaces["user"], recursive)
		if errors.Is(err, idmap.ErrNotSupported) {
			notes = append(notes, fmt.Sprintf("mount %s: %s cannot be idmapped (%v): bound as it is, its files keep the host's owners", mnt.Destination, mnt.Source, err))
			err = idmap.BindClone(mnt.Source, dst, recursive)
		}
		if err != nil {
			return notes, fmt.Errorf("mount %s: %w", mnt.Destination, err)
		}
		mnt.Source = dst
	}
	return notes, nil
}

// checkReachable checks that a process running as uid and gid (and no
// capability on the host) can pass through every directory from / to dir.
func checkReachable(dir string, uid, gid uint32) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for p := dir; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return err
		}
		if !(st.Mode&0o001 != 0 || st.Gid == gid && st.Mode&0o010 != 0 || st.Uid == uid && st.Mode&0o100 != 0) {
			return fmt.Errorf("%s (mode %#o, owner %d:%d) does not let the pod's user namespace (host uid %d, gid %d) through, and runc reaches the container's root file system from inside it: give it o+x (chmod 0711)",
				p, st.Mode&0o7777, st.Uid, st.Gid, uid, gid)
		}
		if p == "/" {
			return nil
		}
	}
}

// UserNamespaceStateDir is where containers' root file systems are
// mounted: the file system whose idmap support matters (critest reads
// it from the verbose status).
func (m *Manager) UserNamespaceStateDir() string { return m.opts.State }
