// Package du measures the space and inodes a directory tree uses, as du(1)
// does: allocated blocks, each inode (hard links) counted once.
//
// Its memory is bounded whatever the tree: it reads each directory a
// batch of names at a time, stats them relative to the directory's
// descriptor, and remembers only inodes with several links, at most
// maxLinked of them; beyond that, each link of such an inode counts its
// share (1/nlink) of it, which is exact once all its links are seen.
package du

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Usage is what a tree uses.
type Usage struct {
	Bytes  uint64 `json:"bytes"`
	Inodes uint64 `json:"inodes"`
}

// maxLinked is the most inodes with several links a walk remembers.
var maxLinked = 1 << 16

// batch is how many names a walk reads from a directory at a time.
const batch = 1024

// Walk measures the tree at dir. Entries removed while it walks are
// skipped.
func Walk(dir string) (Usage, error) {
	f, err := os.Open(dir)
	if err != nil {
		return Usage{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return Usage{}, &os.PathError{Op: "fstat", Path: dir, Err: err}
	}
	w := walker{linked: map[uint64]struct{}{}}
	w.add(&st)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		err = w.dir(f, dir)
	} else {
		f.Close()
	}
	return Usage{Bytes: w.bytes + uint64(w.sharedBytes+0.5), Inodes: w.inodes + uint64(w.sharedInodes+0.5)}, err
}

type walker struct {
	bytes, inodes uint64
	// Inodes with several links counted so far; those beyond its room
	// count their share in sharedBytes and sharedInodes.
	linked                    map[uint64]struct{}
	sharedBytes, sharedInodes float64
}

// add counts an inode.
func (w *walker) add(st *unix.Stat_t) {
	size := uint64(st.Blocks) * 512
	if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if _, seen := w.linked[st.Ino]; seen {
			return
		}
		if len(w.linked) >= maxLinked {
			w.sharedBytes += float64(size) / float64(st.Nlink)
			w.sharedInodes += 1 / float64(st.Nlink)
			return
		}
		w.linked[st.Ino] = struct{}{}
	}
	w.bytes += size
	w.inodes++
}

// dir counts what directory f (at path) holds, and closes it.
func (w *walker) dir(f *os.File, path string) error {
	defer f.Close()
	fd := int(f.Fd())
	for {
		names, rerr := f.Readdirnames(batch)
		for _, name := range names {
			var st unix.Stat_t
			if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return &os.PathError{Op: "fstatat", Path: path + "/" + name, Err: err}
			}
			w.add(&st)
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				continue
			}
			sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return &os.PathError{Op: "open", Path: path + "/" + name, Err: err}
			}
			if err := w.dir(os.NewFile(uintptr(sub), path+"/"+name), path+"/"+name); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
