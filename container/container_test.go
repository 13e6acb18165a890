package container

import (
	"os"
	"path/filepath"
	"testing"
)

// TestNewDirs: the roots of the containers' directories may be passed
// through, not listed; the shims' sockets are root's alone, also where an
// older pier made them passable.
func TestNewDirs(t *testing.T) {
	base := t.TempDir()
	opts := Options{Root: filepath.Join(base, "root"), State: filepath.Join(base, "state"), SocketDir: filepath.Join(base, "s")}
	os.Mkdir(opts.SocketDir, 0o711)
	if _, err := New(opts); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]os.FileMode{opts.Root: 0o711, opts.State: 0o711, opts.SocketDir: 0o700} {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", dir, fi.Mode().Perm(), err, want)
		}
	}
}
