// Package beneath makes directories and opens files beneath a directory
// without ever leaving it. Each path is resolved by openat2(2) with
// RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS, relative to a descriptor of the
// directory: neither "..", an absolute path nor a symbolic link anywhere in
// the path (one that whoever can write beneath the directory planted, e.g.
// a container that mounts a pod's log directory) leads to a file elsewhere.
// The directory itself is trusted: it is opened as its path says.
package beneath

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS

// ErrNotRegular: OpenFile found something other than a regular file.
var ErrNotRegular = errors.New("not a regular file")

// Check refuses a path that cannot be beneath a directory by its letters
// alone: an absolute path, one with a ".." component, or one with a NUL
// byte. (A symbolic link on the way is refused when the path is resolved.)
func Check(name string) error {
	_, err := components(name)
	return err
}

// components splits name, a path relative to the directory, as Check
// checks it.
func components(name string) ([]string, error) {
	if strings.HasPrefix(name, "/") {
		return nil, fmt.Errorf("%q is an absolute path: %w", name, unix.EXDEV)
	}
	if strings.ContainsRune(name, 0) {
		return nil, fmt.Errorf("%q has a NUL byte: %w", name, unix.EINVAL)
	}
	var out []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			return nil, fmt.Errorf("%q has a \"..\" component: %w", name, unix.EXDEV)
		default:
			out = append(out, c)
		}
	}
	return out, nil
}

// openDir opens dir (following its path as it is) for *at calls.
func openDir(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return fd, nil
}

// MkdirAll makes the directory name, a path relative to dir, and every
// missing directory on the way, each with perm (less the umask), beneath
// dir. A symbolic link on the way is an error (ELOOP), as is anything
// else that is not a directory.
func MkdirAll(dir, name string, perm os.FileMode) error {
	comps, err := components(name)
	if err != nil {
		return fmt.Errorf("mkdir beneath %s: %w", dir, err)
	}
	fd, err := openDir(dir)
	if err != nil {
		return err
	}
	for i, c := range comps {
		err := unix.Mkdirat(fd, c, uint32(perm.Perm()))
		if err == nil || err == unix.EEXIST {
			var next int
			next, err = unix.Openat2(fd, c, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolve})
			unix.Close(fd)
			fd = next
		}
		if err != nil {
			if fd >= 0 {
				unix.Close(fd)
			}
			return fmt.Errorf("mkdir %s beneath %s: %w", strings.Join(comps[:i+1], "/"), dir, err)
		}
	}
	unix.Close(fd)
	return nil
}

// OpenFile opens the regular file name, a path relative to dir, beneath
// dir, with flag (os.O_*) and, when it creates it, perm (less the umask).
// Anything but a regular file there is refused (ErrNotRegular) without
// waiting: a FIFO does not block the open.
func OpenFile(dir, name string, flag int, perm os.FileMode) (*os.File, error) {
	if _, err := components(name); err != nil {
		return nil, fmt.Errorf("open beneath %s: %w", dir, err)
	}
	dfd, err := openDir(dir)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Openat2(dfd, name, &unix.OpenHow{
		Flags: uint64(flag | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY), Mode: uint64(perm.Perm()), Resolve: resolve,
	})
	unix.Close(dfd)
	if err != nil {
		return nil, fmt.Errorf("open %s beneath %s: %w", name, dir, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			err = ErrNotRegular
		}
		return nil, fmt.Errorf("open %s beneath %s: %w", name, dir, err)
	}
	if flag&unix.O_NONBLOCK == 0 {
		if err := unix.SetNonblock(fd, false); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	return os.NewFile(uintptr(fd), dir+"/"+name), nil
}
