package du

import (
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
