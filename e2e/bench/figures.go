package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// figures are the measured values -json writes, by name: milliseconds
// (…_ms), KiB (…_kib), MB (…_mb) or counts. Only what was measured is in
// it; e2e/benchcompare reads it.
var figures = map[string]float64{}

// record keeps a figure for -json.
func record(name string, v float64) { figures[name] = v }

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// writeFigures writes the figures and the target's name to path as JSON.
func writeFigures(path, target string) error {
	b, err := json.MarshalIndent(struct {
		Target  string             `json:"target"`
		Figures map[string]float64 `json:"figures"`
	}{target, figures}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// helperProcs finds the helper processes of the given pods and containers:
// those named one of names (as comm, which the kernel cuts to 15
// characters, or as the base name of argv[0]) whose command line names one
// of ids, and those named one of names whose parent is such a helper (the
// pause process under its shim or conmon). Helpers of other runtimes and
// other tests on the node are not counted.
func helperProcs(names, ids []string) []int {
	type proc struct {
		ppid    int
		named   bool
		cmdline string
	}
	procs := map[int]proc{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		args := strings.Split(string(cmd), "\x00")
		c := strings.TrimSpace(string(comm))
		named := slices.ContainsFunc(names, func(n string) bool {
			return n == c || (len(n) > 15 && n[:15] == c) || n == filepath.Base(args[0])
		})
		if !named {
			continue
		}
		procs[pid] = proc{ppid: statusField(fmt.Sprintf("/proc/%d/status", pid), "PPid:"), named: true, cmdline: strings.Join(args, " ")}
	}
	counted := map[int]bool{}
	for pid, p := range procs {
		if slices.ContainsFunc(ids, func(id string) bool { return strings.Contains(p.cmdline, id) }) {
			counted[pid] = true
		}
	}
	for grew := true; grew; {
		grew = false
		for pid, p := range procs {
			if !counted[pid] && counted[p.ppid] {
				counted[pid], grew = true, true
			}
		}
	}
	var out []int
	for pid := range counted {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out
}

// procNames is the comm of each pid, for the report.
func procNames(ps []int) string {
	n := map[string]int{}
	for _, pid := range ps {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		n[strings.TrimSpace(string(b))]++
	}
	var parts []string
	for name, c := range n {
		parts = append(parts, fmt.Sprintf("%d %s", c, name))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
