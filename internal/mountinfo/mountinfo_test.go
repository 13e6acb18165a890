package mountinfo

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestUnmountUnder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "with space"), filepath.Join(dir, "with space", "b")
	os.Mkdir(a, 0o700)
	if err := unix.Mount("tmpfs", a, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(b, 0o700)
	for i := 0; i < 2; i++ { // two mounts on one path
		if err := unix.Mount("tmpfs", b, "tmpfs", 0, ""); err != nil {
			UnmountUnder(dir)
			t.Fatal(err)
		}
	}
	if points, err := Under(dir); err != nil || !slices.Equal(points, []string{a, b, b}) {
		t.Errorf("Under = %q, %v", points, err)
	}
	if err := UnmountUnder(dir); err != nil {
		t.Fatal(err)
	}
	if points, _ := Under(dir); len(points) > 0 {
		t.Errorf("left: %q", points)
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a\040b`: "/a b", `/a\134b`: `/a\b`, `/plain`: "/plain", `/end\04`: `/end\04`} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestField(t *testing.T) {
	line := []byte(`36 35 98:0 /mnt1 /mnt\040x rw,noatime master:1 - ext3 /dev/root rw`)
	for n, want := range map[int]string{0: "36", 3: "/mnt1", 4: `/mnt\040x`, 10: "rw"} {
		if got, ok := field(line, n); !ok || string(got) != want {
			t.Errorf("field %d = %q, %v; want %q", n, got, ok, want)
		}
	}
	if _, ok := field(line, 11); ok {
		t.Error("field 11 of 11 found")
	}
	if _, ok := field([]byte("a b c d"), 4); ok {
		t.Error("a fifth field in a line of four")
	}
}
