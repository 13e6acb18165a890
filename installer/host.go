package installer

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"
	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/internal/atomicfile"
	"github.com/pier-runtime/pier/internal/mountinfo"
)

// host is the node's root file system as the installer sees it: mounted
// at root (the pod's /host), or "/" when the installer runs on the host.
type host struct {
	root string
	log  func(format string, args ...any)
	// beforeWrite, when set, is called after put recorded a file and
	// before it writes it; an error stops there (the tests' kill).
	beforeWrite func(p string) error
}

// path is the installer's path of the host's path p: p's symbolic links
// are resolved as the host would resolve them, inside the host's root
// (/var/run → /run is the host's /run, not the pod's).
func (h *host) path(p string) string {
	if h.root == "/" || h.root == "" {
		return p
	}
	r, err := securejoin.SecureJoin(h.root, p)
	if err != nil {
		// Only a symlink loop; the plain join then fails where it is used.
		return filepath.Join(h.root, p)
	}
	return r
}

// exists reports whether the host has p.
func (h *host) exists(p string) bool {
	_, err := os.Lstat(h.path(p))
	return err == nil
}

// mkdirs makes p and its missing parents, recording each it made.
func (h *host) mkdirs(s *state, p string, perm os.FileMode) error {
	if p == "/" || h.exists(p) {
		return nil
	}
	if err := h.mkdirs(s, filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.Mkdir(h.path(p), perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if !s.created(p) {
		s.Created = append(s.Created, p)
	}
	return nil
}

// source opens content to install.
type source func() (io.ReadCloser, error)

func bytesSource(b []byte) source {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

func fileSource(path string) source {
	return func() (io.ReadCloser, error) { return os.Open(path) }
}

// put installs data as the host's file p; see install.
func (h *host) put(s *state, p string, data []byte, perm os.FileMode) (bool, error) {
	return h.install(s, p, bytesSource(data), perm)
}

// copyFile installs the installer's file src as the host's p, with its
// mode.
func (h *host) copyFile(s *state, src, p string) (bool, error) {
	fi, err := os.Stat(src)
	if err != nil {
		return false, err
	}
	return h.install(s, p, fileSource(src), fi.Mode().Perm())
}

// install makes the host's file p hold what src reads, with mode perm
// (atomically, by rename), unless it already does. A file that was there
// before the installer is first copied to the state's backup directory,
// once. Contents are streamed and compared by digest: binaries of tens of
// MiB never sit in the installer's memory (its pod has a small limit).
// It reports whether p changed.
func (h *host) install(s *state, p string, src source, perm os.FileMode) (bool, error) {
	fi, err := os.Stat(h.path(p))
	switch {
	case err == nil:
		same, err := sameContent(h.path(p), src)
		if err != nil {
			return false, err
		}
		if same && fi.Mode().Perm() == perm {
			return false, nil
		}
		if _, backed := s.Backups[p]; !backed && !s.created(p) {
			b := filepath.Join(StateDir, "backup", p)
			if err := h.mkdirs(&state{}, filepath.Dir(b), 0o700); err != nil {
				return false, err
			}
			if err := writeFrom(h.path(b), fileSource(h.path(p)), fi.Mode().Perm()); err != nil {
				return false, err
			}
			s.Backups[p] = b
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := h.mkdirs(s, filepath.Dir(p), 0o755); err != nil {
			return false, err
		}
		if !s.created(p) {
			s.Created = append(s.Created, p)
		}
	default:
		return false, err
	}
	// Recorded before the file exists: a kill between the two leaves a
	// record of a file not made, which removal ignores.
	if err := h.save(s); err != nil {
		return false, err
	}
	if h.beforeWrite != nil {
		if err := h.beforeWrite(p); err != nil {
			return false, err
		}
	}
	if err := writeFrom(h.path(p), src, perm); err != nil {
		return false, err
	}
	return true, nil
}

func writeFrom(path string, src source, perm os.FileMode) error {
	r, err := src()
	if err != nil {
		return err
	}
	defer r.Close()
	return atomicfile.WriteFrom(path, r, perm)
}

// sameContent reports whether the file at path holds what src reads.
func sameContent(path string, src source) (bool, error) {
	sum := func(open source) ([]byte, error) {
		r, err := open()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		h := sha256.New()
		if _, err := io.Copy(h, r); err != nil {
			return nil, err
		}
		return h.Sum(nil), nil
	}
	a, err := sum(fileSource(path))
	if err != nil {
		return false, err
	}
	b, err := sum(src)
	if err != nil {
		return false, err
	}
	return bytes.Equal(a, b), nil
}

// restore undoes put and mkdirs: it puts each backed-up file back and
// removes what the installer created, children first. A directory that
// is not empty (someone else put a file there) is left, and said.
func (h *host) restore(s *state) error {
	for _, p := range sortedKeys(s.Backups) {
		b := s.Backups[p]
		fi, err := os.Stat(h.path(b))
		if err != nil {
			return fmt.Errorf("the backup of %s: %w", p, err)
		}
		if err := writeFrom(h.path(p), fileSource(h.path(b)), fi.Mode().Perm()); err != nil {
			return err
		}
		delete(s.Backups, p)
		if err := h.save(s); err != nil {
			return err
		}
	}
	for i := len(s.Created) - 1; i >= 0; i-- {
		p := s.Created[i]
		if err := h.remove(p); err != nil {
			return err
		}
		s.Created = s.Created[:i]
		if err := h.save(s); err != nil {
			return err
		}
	}
	return nil
}

// remove removes the host's p: a file, or an empty directory (a
// directory with something the installer did not put there is kept).
func (h *host) remove(p string) error {
	err := os.Remove(h.path(p))
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
		return nil
	case errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST):
		h.log("kept %s: it holds files the installer did not put there", p)
		return nil
	}
	return err
}

// removeTree removes the host's directory p and everything in it, but
// never through a mount: it fails when anything is mounted below p.
func (h *host) removeTree(p string) error {
	hp := h.path(p)
	if points, err := mountinfo.Under(hp); err != nil {
		return err
	} else if len(points) > 0 {
		return fmt.Errorf("cannot remove %s: %s is still mounted", p, strings.TrimPrefix(points[0], strings.TrimSuffix(h.root, "/")))
	}
	return os.RemoveAll(hp)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
