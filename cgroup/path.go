package cgroup

import (
	"fmt"
	"path"
	"strings"
)

// scopePrefix names a container's systemd scope: pier-<id>.scope, as
// containerd's are cri-containerd-<id>.scope and CRI-O's crio-<id>.scope.
const scopePrefix = "pier"

// Paths is where a container's cgroup is.
type Paths struct {
	// Runtime is the OCI spec's cgroupsPath: a path under each hierarchy
	// (cgroupfs), or slice:prefix:name (systemd), from which runc and crun
	// make the scope prefix-name.scope under the slice.
	Runtime string
	// Dir is the cgroup's directory under each hierarchy's root, where
	// its statistics are read.
	Dir string
}

// DefaultParent holds the containers of pods that name no cgroup parent
// (kubelet always names one; crictl users often do not).
func (n *Node) DefaultParent() string {
	if n.Driver == Systemd {
		return "pier.slice"
	}
	return "/pier"
}

// CheckParent checks that a pod's cgroup parent has the driver's form: an
// absolute path for cgroupfs (as kubelet sends it:
// /kubepods/burstable/pod<uid>), a slice for systemd, by name or by its
// path (kubelet sends the path:
// /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice;
// systemd places a slice by its name alone).
func (n *Node) CheckParent(parent string) error {
	if parent == "" {
		return nil
	}
	if n.Driver == Systemd {
		if strings.Contains(parent, "/") && (!strings.HasPrefix(parent, "/") || path.Clean(parent) != parent) {
			return fmt.Errorf("%w: cgroup parent %q: the systemd cgroup driver wants a slice, by name (kubepods-pod1234.slice) or by path (/kubepods.slice/kubepods-pod1234.slice)", ErrInvalid, parent)
		}
		if _, err := ExpandSlice(path.Base(parent)); err != nil {
			return fmt.Errorf("%w: cgroup parent %q: the systemd cgroup driver wants a slice, by name (kubepods-pod1234.slice) or by path (/kubepods.slice/kubepods-pod1234.slice): %v", ErrInvalid, parent, err)
		}
		return nil
	}
	if !strings.HasPrefix(parent, "/") || path.Clean(parent) != parent {
		return fmt.Errorf("%w: cgroup parent %q: the cgroupfs driver wants a clean absolute path such as /kubepods/pod1234", ErrInvalid, parent)
	}
	return nil
}

// Container returns where container id's cgroup is under parent (the
// default parent when empty), which CheckParent accepted.
func (n *Node) Container(parent, id string) Paths {
	if parent == "" {
		parent = n.DefaultParent()
	}
	if n.Driver == Systemd {
		slice := path.Base(parent)
		dir, _ := ExpandSlice(slice)
		return Paths{Runtime: slice + ":" + scopePrefix + ":" + id, Dir: path.Join(dir, scopePrefix+"-"+id+".scope")}
	}
	p := path.Join(parent, id)
	return Paths{Runtime: p, Dir: p}
}

// ExpandSlice turns a systemd slice name into its cgroup path: each dash
// nests a slice in the one before, so kubepods-burstable-pod1.slice is
// /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice,
// and -.slice, the root slice, is /.
func ExpandSlice(slice string) (string, error) {
	name, ok := strings.CutSuffix(slice, ".slice")
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("%q is not a slice name", slice)
	}
	if name == "-" {
		return "/", nil
	}
	if strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-") || strings.Contains(name, "--") {
		return "", fmt.Errorf("%q: a slice name's dashes separate nonempty parts", slice)
	}
	var b strings.Builder
	prefix := ""
	for part := range strings.SplitSeq(name, "-") {
		prefix += part
		b.WriteString("/" + prefix + ".slice")
		prefix += "-"
	}
	return b.String(), nil
}

// Pod returns the directory of a pod's cgroup, the cgroup parent kubelet
// names for it (which CheckParent accepted), under each hierarchy's root:
// the path itself with cgroupfs, the slice's path with systemd. A pod
// without a cgroup parent has no cgroup of its own: "".
func (n *Node) Pod(parent string) string {
	if parent == "" {
		return ""
	}
	if n.Driver == Systemd {
		dir, _ := ExpandSlice(path.Base(parent))
		return dir
	}
	return parent
}
