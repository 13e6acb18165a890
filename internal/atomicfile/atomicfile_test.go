package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteJSON(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rec.json")
	// A record an older version left readable by all is replaced by one
	// that is not.
	if err := os.WriteFile(path, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, v := range []int{1, 2} {
		if err := WriteJSON(path, map[string]int{"v": v}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != "{\n  \"v\": 2\n}\n" {
		t.Fatalf("content %q, %v", b, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v, %v; want 0600: records may hold secrets", fi.Mode().Perm(), err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left: %v", entries)
	}
}

func TestReplace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, v := range []string{"first", "second"} {
		if err := ReplaceJSON(path, map[string]string{"v": v}); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := "{\n  \"v\": \"" + v + "\"\n}\n"; string(b) != want {
			t.Fatalf("content %q, want %q", b, want)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != RecordMode {
		t.Fatalf("mode %v, want %v", fi.Mode().Perm(), RecordMode)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("%d files left in the directory, want 1 (no temp file)", len(entries))
	}
	if err := Replace(filepath.Join(dir, "missing", "x"), []byte("x"), 0o644); err == nil {
		t.Fatal("Replace into a missing directory succeeded")
	}
}
