package server

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadOOMKills(t *testing.T) {
	dir := t.TempDir()
	v1 := filepath.Join(dir, "memory.oom_control")
	os.WriteFile(v1, []byte("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), 0o644)
	v2 := filepath.Join(dir, "memory.events")
	os.WriteFile(v2, []byte("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n"), 0o644)
	if n := readOOMKills(v1); n != 2 {
		t.Errorf("v1: %d", n)
	}
	if n := readOOMKills(v2); n != 1 {
		t.Errorf("v2: %d", n)
	}
	if n := readOOMKills(filepath.Join(dir, "nope")); n != -1 {
		t.Errorf("missing: %d", n)
	}
	if n := readOOMKills(""); n != -1 {
		t.Errorf("none: %d", n)
	}
	// This process's own memory cgroup has a counter (where there is one).
	if f := oomCounterFile(os.Getpid(), ""); f != "" && readOOMKills(f) < 0 {
		t.Errorf("counter file %s unreadable", f)
	}
}
