package du

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestWalkCountsHardLinksOnce(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	os.WriteFile(f, make([]byte, 64<<10), 0o644)
	os.Link(f, filepath.Join(dir, "g"))
	u, err := Walk(dir)
	if err != nil || u.Inodes != 2 || u.Bytes < 64<<10 { // the dir and one file
		t.Fatalf("%+v %v", u, err)
	}
}

// TestWalkMemoryBounded: a walk remembers at most maxLinked inodes with
// several links (none with one) and still counts each inode once, sharing
// those beyond among their links.
func TestWalkMemoryBounded(t *testing.T) {
	dir := t.TempDir()
	for i := range 20 {
		f := filepath.Join(dir, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(f, make([]byte, 8<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			os.Link(f, filepath.Join(dir, fmt.Sprintf("l%d", i)))
		}
	}
	os.MkdirAll(filepath.Join(dir, "a", "b", "c"), 0o755)
	os.WriteFile(filepath.Join(dir, "a", "b", "c", "deep"), []byte("x"), 0o644)
	want, err := Walk(dir)
	if err != nil || want.Inodes != 1+20+3+1 {
		t.Fatalf("%+v %v", want, err)
	}
	saved := maxLinked
	defer func() { maxLinked = saved }()
	maxLinked = 3
	var w walker
	w.linked = map[uint64]struct{}{}
	f, _ := os.Open(dir)
	if err := w.dir(f, dir); err != nil {
		t.Fatal(err)
	}
	if len(w.linked) > 3 {
		t.Errorf("remembered %d linked inodes, at most 3", len(w.linked))
	}
	got, err := Walk(dir)
	if err != nil || got != want {
		t.Errorf("with a full set: %+v %v, want %+v", got, err, want)
	}
}
