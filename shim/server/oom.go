package server

import (
	"os"
	"path/filepath"
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
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return ""
	}
	var v1, v2 string
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			v2 = parts[2]
		}
		for _, c := range strings.Split(parts[1], ",") {
			if c == "memory" {
				v1 = parts[2]
			}
		}
	}
	if v1 == "" && v2 == "" {
		return ""
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		// id parent major:minor root mount-point options ... - fstype source super-options
		pre, post, ok := strings.Cut(line, " - ")
		fields, after := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(after) < 3 {
			continue
		}
		root, point := fields[3], fields[4]
		switch {
		case v1 != "" && after[0] == "cgroup" && hasOption(after[2], "memory"):
			if rel, ok := within(v1, root); ok {
				return filepath.Join(point, rel, "memory.oom_control")
			}
		case v1 == "" && after[0] == "cgroup2":
			if rel, ok := within(v2, root); ok {
				return filepath.Join(point, rel, "memory.events")
			}
		}
	}
	return ""
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
