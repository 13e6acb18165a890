package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containerd/cgroups/v3/cgroup1"
)

func TestReadV1Dirs(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"memory/memory.usage_in_bytes":          "1000\n",
		"memory/memory.max_usage_in_bytes":      "2000\n",
		"memory/memory.failcnt":                 "3\n",
		"memory/memory.limit_in_bytes":          "9223372036854771712\n",
		"memory/memory.stat":                    "cache 1\nrss 2\ntotal_cache 300\ntotal_rss 600\ntotal_mapped_file 50\ntotal_inactive_file 100\ntotal_pgfault 7\ntotal_pgmajfault 1\n",
		"memory/memory.memsw.usage_in_bytes":    "1500\n",
		"cpu/cpuacct.usage":                     "123456789\n",
		"cpu/cpuacct.stat":                      "user 250\nsystem 50\n",
		"cpu/cpu.stat":                          "nr_periods 10\nnr_throttled 2\nthrottled_time 999\n",
		"pids/pids.current":                     "4\n",
		"pids/pids.max":                         "max\n",
		"blkio/blkio.io_serviced_recursive":     "Total 0\n",
		"blkio/blkio.throttle.io_service_bytes": "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:16 Read 1\nTotal 12289\n",
		"blkio/blkio.throttle.io_serviced":      "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
	}
	for name, data := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dirs := map[cgroup1.Name]string{
		cgroup1.Memory: filepath.Join(root, "memory"), cgroup1.Cpu: filepath.Join(root, "cpu"),
		cgroup1.Cpuacct: filepath.Join(root, "cpu"), cgroup1.Pids: filepath.Join(root, "pids"),
		cgroup1.Blkio: filepath.Join(root, "blkio"),
	}
	u, err := readV1Dirs("/c", dirs)
	if err != nil {
		t.Fatal(err)
	}
	want := Usage{
		MemoryUsage: 1000, MemoryMaxUsage: 2000, Failcnt: 3, RSS: 600, Cache: 300, MappedFile: 50,
		WorkingSet: 900, PageFaults: 7, MajorPageFaults: 1, Swap: 500,
		CPUUsageNanos: 123456789, CPUUserNanos: 2_500_000_000, CPUSystemNanos: 500_000_000,
		CFSPeriods: 10, CFSThrottledPeriods: 2, CFSThrottledNanos: 999,
		Processes: 4, IOReadBytes: 4097, IOWriteBytes: 8192, IOReads: 1, IOWrites: 2,
	}
	if *u != want {
		t.Fatalf("usage\n got %+v\nwant %+v", *u, want)
	}
	// A cgroup removed meanwhile is not found.
	os.RemoveAll(filepath.Join(root, "pids"))
	if _, err := readV1Dirs("/c", dirs); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a removed cgroup: %v, want ErrNotExist", err)
	}
}
