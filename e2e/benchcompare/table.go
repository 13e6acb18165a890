package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"time"
)

// row is a line of the table: value gives a runtime's figure (lower is
// better) and its text, ok false when it was not measured.
type row struct {
	label string
	value func(f map[string]float64) (v float64, text string, ok bool)
}

func get(f map[string]float64, names ...string) ([]float64, bool) {
	var vs []float64
	for _, n := range names {
		v, ok := f[n]
		if !ok {
			return nil, false
		}
		vs = append(vs, v)
	}
	return vs, true
}

func msRow(label, name string) row {
	return row{label, func(f map[string]float64) (float64, string, bool) {
		v, ok := get(f, name)
		if !ok {
			return 0, "", false
		}
		return v[0], fmtMs(v[0]), true
	}}
}

func mbRow(label, name string) row {
	return row{label, func(f map[string]float64) (float64, string, bool) {
		v, ok := get(f, name)
		if !ok {
			return 0, "", false
		}
		mb := v[0] * 1024 / 1e6
		return mb, fmt.Sprintf("%.2f MB", mb), true
	}}
}

func fmtMs(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f ms", v)
	}
	return fmt.Sprintf("%.1f ms", v)
}

// rows are the table's, in the order.
func rows(pullMB float64, runs int) []row {
	pull := fmt.Sprintf("pull + unpack, 5 gzip layers, loopback registry (median of %d)", runs)
	if pullMB > 0 {
		pull = fmt.Sprintf("pull + unpack, %.0f MB in 5 gzip layers, loopback registry (median of %d)", pullMB, runs)
	}
	return []row{
		msRow("RunPodSandbox (crictl, median of 20)", "runp_crictl_ms"),
		{"CreateContainer + StartContainer (crictl, each, median of 20)", func(f map[string]float64) (float64, string, bool) {
			v, ok := get(f, "create_crictl_ms", "start_crictl_ms")
			if !ok {
				return 0, "", false
			}
			return v[0] + v[1], strings.TrimSuffix(fmtMs(v[0]), " ms") + " + " + fmtMs(v[1]), true
		}},
		msRow("runp + create + start (crictl, median of 20)", "runp_create_start_crictl_ms"),
		mbRow("memory per pod (helpers + daemon growth, PSS, 10 pods of one running container)", "pod_memory_pss_kib"),
		mbRow("daemon idle PSS", "daemon_idle_pss_kib"),
		msRow(pull, "pull_ms"),
		msRow("`crictl exec <id> true` (median of 20)", "exec_spdy_crictl_ms"),
	}
}

// render is the Markdown table of the results, with pier's ratio to the
// best peer on each row, and the machine and date under it.
func render(defs []*runtimeDef, results map[string]map[string]float64, runs int) string {
	var b strings.Builder
	b.WriteString("| figure |")
	for _, d := range defs {
		b.WriteString(" " + d.title + " |")
	}
	b.WriteString(" pier / best peer |\n|---|")
	for range defs {
		b.WriteString("---|")
	}
	b.WriteString("---|\n")
	pullMB := 0.0
	for _, f := range results {
		if v, ok := f["pull_mb"]; ok {
			pullMB = v
		}
	}
	for _, r := range rows(pullMB, runs) {
		b.WriteString("| " + r.label + " |")
		best, pier := math.Inf(1), math.NaN()
		for _, d := range defs {
			v, text, ok := r.value(results[d.key])
			if !ok {
				b.WriteString(" – |")
				continue
			}
			b.WriteString(" " + text + " |")
			if d.key == "pier" {
				pier = v
			} else {
				best = math.Min(best, v)
			}
		}
		if math.IsNaN(pier) || math.IsInf(best, 1) || best <= 0 {
			b.WriteString(" – |\n")
		} else {
			fmt.Fprintf(&b, " %.2f |\n", pier/best)
		}
	}
	b.WriteString("\nLower is better on every row; the last column is pier's figure over the best peer's (for CreateContainer + StartContainer, their sums).\n")
	b.WriteString("\n" + machine() + "\n")
	return b.String()
}

// machine describes where the figures were measured, and when.
func machine() string {
	kernel, _ := exec.Command("uname", "-r").Output()
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(strings.TrimPrefix(strings.SplitN(string(b), "\n", 2)[0], "MemTotal:"), "%d", &kb)
		mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	cgroup := "v1"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		cgroup = "v2"
	} else if _, err := os.Stat("/sys/fs/cgroup/unified"); err == nil {
		cgroup = "v1 (hybrid, v2 unified without controllers)"
	}
	nproc, _ := exec.Command("nproc").Output()
	runcV, _ := exec.Command(runc, "--version").Output()
	crictlV := "crictl"
	if path, err := exec.LookPath("crictl"); err == nil {
		// A crictl from go install says "version unknown": its module's is kept.
		out, _ := exec.Command("go", "version", "-m", path).Output()
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "mod" {
				crictlV = "crictl " + f[2]
			}
		}
	}
	return fmt.Sprintf("Measured by `make bench-compare` on %s: %s CPUs, %s of memory, kernel %s, cgroup %s; %s, %s; all with the same runc and CNI plugins.\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), strings.TrimSpace(string(nproc)), mem, strings.TrimSpace(string(kernel)), cgroup,
		strings.TrimSpace(strings.SplitN(string(runcV), "\n", 2)[0]), crictlV)
}
