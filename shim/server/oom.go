package server

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// oomCounterFile returns the file holding the OOM kill counter of the
// memory cgroup that process pid is in: memory.oom_control of the cgroup v1
// memory hierarchy, or memory.events of the v2 hierarchy. It reads
// /proc/<pid>/cgroup, so any cgroupsPath form (cgroupfs or systemd) works;
// when that fails it falls back on cgroupsPath in cgroupfs form under
// /sys/fs/cgroup. It returns "" when it finds none.
func oomCounterFile(pid int, cgroupsPath string) string {
	if f := oomCounterFromProc(pid); f != "" {
		return f
	}
	if !strings.HasPrefix(cgroupsPath, "/") || strings.Contains(cgroupsPath, ":") {
		return ""
	}
	for _, f := range []string{
		filepath.Join("/sys/fs/cgroup/memory", cgroupsPath, "memory.oom_control"),
		filepath.Join("/sys/fs/cgroup", cgroupsPath, "memory.events"),
	} {
		if _, err := os.Stat(f); err == nil {
			return f
		}
	}
	return ""
}

func oomCounterFromProc(pid int) string {
	cgs, err := cgroupsOf(pid)
	if err != nil {
		return ""
	}
	// The v1 memory hierarchy, where there is one; else v2's.
	var v2 string
	for _, cg := range cgs {
		switch {
		case slices.Contains(cg.controllers, "memory"):
			if cg.dir == "" {
				return ""
			}
			return filepath.Join(cg.dir, "memory.oom_control")
		case len(cg.controllers) == 0 && cg.dir != "":
			v2 = filepath.Join(cg.dir, "memory.events")
		}
	}
	return v2
}

func hasOption(opts, name string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == name {
			return true
		}
	}
	return false
}

// within returns path relative to a mount's root, if it is under it.
func within(path, root string) (string, bool) {
	if root == "/" {
		return path, true
	}
	if path == root || strings.HasPrefix(path, root+"/") {
		return strings.TrimPrefix(path, root), true
	}
	return "", false
}

// readOOMKills reads the "oom_kill N" line of a counter file; -1 when it
// cannot.
func readOOMKills(file string) int64 {
	if file == "" {
		return -1
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return n
			}
		}
	}
	return -1
}
