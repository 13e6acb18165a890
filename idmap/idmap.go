// Package idmap makes idmapped mounts: views of a directory tree in which
// every file's owner is shifted through the id mappings of a user
// namespace, so that files owned by uid 0 on disk are owned, in the view,
// by the host uid that root of that namespace maps to (and a file that
// namespace's root creates in the view is stored owned by 0).
//
// pier gives them to runtimes that cannot make them (runc 1.1): it mounts
// a container's overlay from idmapped clones of the image's layers, and
// clones each bind mount source, idmapped, to a path of the container's
// own (Clone), which the runtime then binds. mountinfo.UnmountUnder removes
// them.
//
// An idmapped mount is a clone of a mount made with open_tree(2), given the
// user namespace with mount_setattr(2) (MOUNT_ATTR_IDMAP) while it is
// detached, and attached with move_mount(2). The file system must allow it
// (ext4, xfs, btrfs, overlayfs; tmpfs from Linux 6.3; not proc, sysfs or
// cgroupfs).
package idmap

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNotSupported: the file system (or one mounted below the path) cannot
// be idmapped.
var ErrNotSupported = errors.New("the file system cannot be idmapped")

// Check reports, with nil, whether the mount of path can be idmapped with
// the user namespace userns (a /proc/<pid>/ns/user file or a pin of one).
// It mounts nothing.
func Check(path, userns string) error {
	tree, err := idmappedTree(path, userns, false)
	if err != nil {
		return err
	}
	return unix.Close(tree)
}

// Clone mounts at dst an idmapped clone of the tree mounted at src (with
// what is mounted below src when recursive), with the mappings of userns.
// dst is made, as an empty file when src is not a directory; its parent
// must exist. A src whose file system cannot be idmapped gives
// ErrNotSupported, and nothing at dst.
func Clone(src, dst, userns string, recursive bool) error {
	tree, err := idmappedTree(src, userns, recursive)
	if err != nil {
		return err
	}
	defer unix.Close(tree)
	return attach(tree, src, dst)
}

// BindClone mounts at dst a plain clone of the tree at src (recursive or
// not), without idmapping: for what Clone refuses with ErrNotSupported.
func BindClone(src, dst string, recursive bool) error {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, flags)
	if err != nil {
		return fmt.Errorf("clone the mount of %s: %w", src, err)
	}
	defer unix.Close(tree)
	return attach(tree, src, dst)
}

// idmappedTree clones the mount at path (and those below it when
// recursive) into a detached tree and idmaps it with userns. The caller
// closes the tree's descriptor; a tree never attached is then unmounted.
func idmappedTree(path, userns string, recursive bool) (int, error) {
	ns, err := unix.Open(userns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open the user namespace: %w", err)
	}
	defer unix.Close(ns)
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	setFlags := uint(unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
		setFlags |= unix.AT_RECURSIVE
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, path, flags)
	if err != nil {
		return -1, fmt.Errorf("clone the mount of %s: %w", path, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(ns)}
	if err := unix.MountSetattr(tree, "", setFlags, &attr); err != nil {
		unix.Close(tree)
		if err == unix.EINVAL {
			return -1, fmt.Errorf("%w: %s: %v", ErrNotSupported, path, err)
		}
		return -1, fmt.Errorf("idmap the mount of %s: %w", path, err)
	}
	return tree, nil
}

// attach makes dst, of src's type (directory or file), and moves the
// detached tree onto it.
func attach(tree int, src, dst string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		err = os.Mkdir(dst, 0o700)
	} else {
		err = os.WriteFile(dst, nil, 0o600)
	}
	if err != nil {
		return err
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		os.Remove(dst)
		return fmt.Errorf("mount the clone of %s at %s: %w", src, dst, err)
	}
	return nil
}
