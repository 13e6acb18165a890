package beneath

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// setup makes a directory to work beneath and one outside it, with
// symbolic links from inside to outside.
func setup(t *testing.T) (dir, outside string) {
	t.Helper()
	base := t.TempDir()
	dir, outside = filepath.Join(base, "logs"), filepath.Join(base, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(outside, "file"), []byte("host file\n"), 0o644)
	os.Symlink(outside, filepath.Join(dir, "linkdir"))
	os.Symlink(filepath.Join(outside, "file"), filepath.Join(dir, "link.log"))
	os.Symlink("../outside/file", filepath.Join(dir, "rel.log"))
	return dir, outside
}

func TestMkdirAll(t *testing.T) {
	dir, outside := setup(t)
	if err := MkdirAll(dir, "a/b/c", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(dir, "a/b/c", 0o755); err != nil {
		t.Errorf("again: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "a/b/c")); err != nil || !fi.IsDir() {
		t.Errorf("a/b/c: %v", err)
	}
	for _, name := range []string{"linkdir/x", "linkdir", "a/../../outside/y", "/tmp/x", "link.log/x"} {
		if err := MkdirAll(dir, name, 0o755); err == nil {
			t.Errorf("MkdirAll %q succeeded", name)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("made outside: %v", entries)
	}
}

func TestOpenFile(t *testing.T) {
	dir, outside := setup(t)
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	for range 2 {
		f, err := OpenFile(dir, "sub/c.log", os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("line\n")
		f.Close()
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "sub/c.log")); string(b) != "line\nline\n" {
		t.Errorf("content %q", b)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]error{
		"link.log": unix.ELOOP, "rel.log": unix.ELOOP, "linkdir/file": unix.ELOOP, "linkdir/new": unix.ELOOP,
		"../outside/file": unix.EXDEV, "sub/../../outside/file": unix.EXDEV, filepath.Join(outside, "file"): unix.EXDEV,
		"fifo": unix.ENXIO, "sub": unix.EISDIR,
	} {
		f, err := OpenFile(dir, name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err == nil {
			f.Close()
			t.Errorf("OpenFile %q succeeded", name)
		} else if !errors.Is(err, want) {
			t.Errorf("OpenFile %q: %v, want %v", name, err, want)
		}
	}
	// A FIFO with a reader opens, and is refused all the same.
	r, err := os.OpenFile(filepath.Join(dir, "fifo"), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := OpenFile(dir, "fifo", os.O_WRONLY, 0); !errors.Is(err, ErrNotRegular) {
		t.Errorf("FIFO with a reader: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "file")); string(b) != "host file\n" {
		t.Errorf("the file outside was written: %q", b)
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 1 {
		t.Errorf("made outside: %v", entries)
	}
}

func TestCheck(t *testing.T) {
	for name, ok := range map[string]bool{
		"c.log": true, "c/0.log": true, "./c//0.log": true, "c..log": true, "..c/x": true,
		"../x": false, "c/../x": false, "..": false, "/tmp/x": false, "c\x00.log": false,
	} {
		if err := Check(name); (err == nil) != ok {
			t.Errorf("Check(%q) = %v", name, err)
		}
	}
}
