package container

import (
	"errors"
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

func TestCheckLogPath(t *testing.T) {
	for _, c := range []struct {
		dir, name string
		ok        bool
	}{
		{"/var/log/pods/ns_p_uid", "c/0.log", true},
		{"/var/log/pods/ns_p_uid", "c.log", true},
		{"", "../../x", true}, // no log directory: no log
		{"/var/log/pods/ns_p_uid", "", true},
		{"/var/log/pods/ns_p_uid", "../../../../tmp/y", false},
		{"/var/log/pods/ns_p_uid", "c/../../y", false},
		{"/var/log/pods/ns_p_uid", "..", false},
		{"/var/log/pods/ns_p_uid", "/tmp/y", false},
		{"/var/log/pods/ns_p_uid", "c\x00.log", false},
		{"relative/dir", "c.log", false},
	} {
		err := checkLogPath(c.dir, c.name)
		if c.ok && err != nil || !c.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("checkLogPath(%q, %q) = %v", c.dir, c.name, err)
		}
	}
}

func TestMakeLogDir(t *testing.T) {
	base := t.TempDir()
	dir, outside := filepath.Join(base, "pods", "ns_p_uid"), filepath.Join(base, "outside")
	os.Mkdir(outside, 0o755)
	if err := makeLogDir(dir, "c/0.log"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "c")); err != nil || !fi.IsDir() {
		t.Errorf("c: %v", err)
	}
	os.Symlink(outside, filepath.Join(dir, "link"))
	if err := makeLogDir(dir, "link/sub/0.log"); err == nil {
		t.Error("made a directory through a symbolic link")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("made outside: %v", entries)
	}
}
