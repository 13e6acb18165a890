package privdir

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func perm(t *testing.T, dir string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode() & (os.ModePerm | os.ModeSetgid | os.ModeSetuid | os.ModeSticky)
}

func TestMake(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "a", "b")
	if err := Make(dir, Private); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if m := perm(t, d); m != Private {
			t.Errorf("%s: mode %v, want %v", d, m, Private)
		}
	}
	// What an older pier made is narrowed; a narrower mode stays.
	for _, c := range []struct{ had, mode, want os.FileMode }{
		{0o711, Private, Private},
		{0o755, Passable, Passable},
		{0o700, Passable, 0o700},
		{0o777 | os.ModeSticky, Passable, Passable},
	} {
		os.Chmod(dir, c.had)
		if err := Make(dir, c.mode); err != nil {
			t.Fatal(err)
		}
		if m := perm(t, dir); m != c.want {
			t.Errorf("%v made %v: mode %v, want %v", c.had, c.mode, m, c.want)
		}
	}
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	if err := Make(file, Private); err == nil {
		t.Error("Make of a file succeeded")
	}
}

func TestShare(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir := filepath.Join(t.TempDir(), "c")
	if err := Make(dir, Private); err != nil {
		t.Fatal(err)
	}
	if err := Share(dir, 4242); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dir)
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o710 || st.Uid != 0 || st.Gid != 4242 {
		t.Errorf("shared: mode %v, owner %d:%d; want 0710, 0:4242", fi.Mode().Perm(), st.Uid, st.Gid)
	}
}
