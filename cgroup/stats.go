package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	v2stats "github.com/containerd/cgroups/v3/cgroup2/stats"
)

// Usage is what a cgroup (a container's or a pod's) has used, read by
// ReadUsage: the one reader behind container stats, pod stats and the
// metrics RPCs.
type Usage struct {
	CPUUsageNanos       uint64 // cumulative CPU time
	CPUUserNanos        uint64
	CPUSystemNanos      uint64
	CFSPeriods          uint64
	CFSThrottledPeriods uint64
	CFSThrottledNanos   uint64

	MemoryUsage     uint64
	MemoryMaxUsage  uint64 // v1 only: v2 has no high-water mark
	WorkingSet      uint64 // usage less inactive file cache, as kubelet counts it
	RSS             uint64
	Cache           uint64
	MappedFile      uint64
	Swap            uint64
	KernelUsage     uint64
	Failcnt         uint64 // times the limit was hit (v2: memory.events max)
	OOMEvents       uint64 // v2 only (memory.events oom_kill); v1 reports none
	PageFaults      uint64
	MajorPageFaults uint64
	MemoryLimit     uint64 // 0 when unlimited

	Processes uint64 // pids.current: processes and threads
	PidsLimit uint64 // 0 when unlimited

	IOReadBytes, IOWriteBytes, IOReads, IOWrites uint64

	// PSI is the pressure stall information of cgroup v2 (the
	// cpu.pressure, memory.pressure and io.pressure files), where the
	// kernel has it (CONFIG_PSI, not disabled with psi=0). Cgroup v1 has
	// none: nil there.
	PSI *PSI
}

// PSI is a cgroup's pressure, per resource; nil where the kernel has none.
type PSI struct {
	CPU, Memory, IO *Pressure
}

// Pressure is one resource's pressure: some tasks stalled, all stalled.
type Pressure struct {
	Some, Full PressureData
}

// PressureData is one line of a *.pressure file.
type PressureData struct {
	Avg10, Avg60, Avg300 float64 // percent of wall time stalled
	TotalMicros          uint64  // cumulative stall time
}

// unlimited is above any real limit: v1 reports "no limit" as a page-rounded
// maximum, v2 as "max" (the library reads it as the maximum uint64).
const unlimited = 1 << 62

// ReadUsage reads the usage of the cgroup at dir (a path under each
// hierarchy's root, as Paths.Dir and PodDir give it) on a node whose layout
// is mode. A cgroup that does not exist (its processes all ended) is an
// error wrapping os.ErrNotExist.
func ReadUsage(mode cgroups.CGMode, dir string) (*Usage, error) {
	if mode == cgroups.Unified {
		return readV2(dir)
	}
	return readV1(dir)
}

// v1Hierarchy is the v1 hierarchies Usage reads, found once (the library
// would parse the mount table at every Load): cgroup1.Default's, but those
// Usage has no figure from.
var v1Hierarchy = sync.OnceValues(func() ([]cgroup1.Subsystem, error) {
	all, err := cgroup1.Default()
	if err != nil {
		return nil, err
	}
	var read []cgroup1.Subsystem
	for _, s := range all {
		switch s.Name() {
		case cgroup1.Cpu, cgroup1.Cpuacct, cgroup1.Memory, cgroup1.Pids, cgroup1.Blkio:
			read = append(read, s)
		}
	}
	return read, nil
})

// readV1 reads, in each v1 hierarchy, only the files Usage has a figure
// from: 13 or so per cgroup. The library's Stat opened about 32 (every
// memsw, kmem and kmem.tcp counter, per-CPU usage, eight CFQ tables and
// /proc/partitions) and was 80% of pierd's CPU in a ListPodSandboxStats of
// 100 pods, which reads three cgroups per pod.
func readV1(dir string) (*Usage, error) {
	subs, err := v1Hierarchy()
	if err != nil {
		return nil, err
	}
	path := map[cgroup1.Name]string{}
	for _, s := range subs {
		if p, ok := s.(interface{ Path(string) string }); ok {
			path[s.Name()] = p.Path(dir)
		}
	}
	return readV1Dirs(dir, path)
}

// readV1Dirs is readV1 of the cgroup dir, whose directory in each
// hierarchy path gives.
func readV1Dirs(dir string, path map[cgroup1.Name]string) (*Usage, error) {
	u := &Usage{}
	r := v1Reader{}
	if d, ok := path[cgroup1.Memory]; ok {
		r.dir = d
		u.MemoryUsage = r.uint("memory.usage_in_bytes")
		if r.gone {
			return nil, fmt.Errorf("cgroup %s: %w", dir, os.ErrNotExist)
		}
		u.MemoryMaxUsage, u.Failcnt = r.uint("memory.max_usage_in_bytes"), r.uint("memory.failcnt")
		if l := r.uint("memory.limit_in_bytes"); l < unlimited {
			u.MemoryLimit = l
		}
		st := r.keyed("memory.stat")
		u.RSS, u.Cache, u.MappedFile = st["total_rss"], st["total_cache"], st["total_mapped_file"]
		u.WorkingSet = workingSet(u.MemoryUsage, st["total_inactive_file"])
		u.PageFaults, u.MajorPageFaults = st["total_pgfault"], st["total_pgmajfault"]
		// memsw counts memory and swap; both it and kmem may be off.
		if sw := r.uint("memory.memsw.usage_in_bytes"); sw > u.MemoryUsage {
			u.Swap = sw - u.MemoryUsage
		}
		u.KernelUsage = r.uint("memory.kmem.usage_in_bytes")
	}
	if d, ok := path[cgroup1.Cpuacct]; ok {
		r.dir = d
		u.CPUUsageNanos = r.uint("cpuacct.usage")
		st := r.keyed("cpuacct.stat") // in USER_HZ ticks
		u.CPUUserNanos, u.CPUSystemNanos = st["user"]*uint64(time.Second)/clockTicks, st["system"]*uint64(time.Second)/clockTicks
	}
	if d, ok := path[cgroup1.Cpu]; ok {
		r.dir = d
		st := r.keyed("cpu.stat")
		u.CFSPeriods, u.CFSThrottledPeriods, u.CFSThrottledNanos = st["nr_periods"], st["nr_throttled"], st["throttled_time"]
	}
	if d, ok := path[cgroup1.Pids]; ok {
		r.dir = d
		u.Processes = r.uint("pids.current")
		u.PidsLimit = r.uint("pids.max") // "max": none, 0
	}
	if d, ok := path[cgroup1.Blkio]; ok {
		r.dir = d
		// The recursive tables of the CFQ and BFQ schedulers where the
		// cgroup's devices use one, else the throttling layer's.
		if !r.blkio(u, "blkio.io_service_bytes_recursive", "blkio.io_serviced_recursive") {
			r.blkio(u, "blkio.throttle.io_service_bytes", "blkio.throttle.io_serviced")
		}
	}
	if r.gone {
		return nil, fmt.Errorf("cgroup %s: %w", dir, os.ErrNotExist)
	}
	return u, r.err
}

// clockTicks is USER_HZ, the unit of cpuacct.stat: 100 on every Linux
// architecture Kubernetes runs on.
const clockTicks = 100

// v1Reader reads a v1 cgroup's files in dir, keeping the first error; a
// cgroup removed meanwhile (a container that ended) sets gone.
type v1Reader struct {
	dir  string
	err  error
	gone bool
}

// read reads a file of the cgroup; a file the kernel does not have (memsw
// and kmem may be off, the root has no pids.current) reads as empty.
func (r *v1Reader) read(name string) string {
	b, err := os.ReadFile(filepath.Join(r.dir, name))
	switch {
	case err == nil:
		return string(b)
	case errors.Is(err, os.ErrNotExist):
		if _, serr := os.Stat(r.dir); serr != nil {
			r.gone = true
		}
	case r.err == nil:
		r.err = err
	}
	return ""
}

// uint reads a file of one number ("max" is 0).
func (r *v1Reader) uint(name string) uint64 {
	v, _ := strconv.ParseUint(strings.TrimSpace(r.read(name)), 10, 64)
	return v
}

// keyed reads a file of "key value" lines.
func (r *v1Reader) keyed(name string) map[string]uint64 {
	m := map[string]uint64{}
	for _, line := range strings.Split(r.read(name), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			if n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64); err == nil {
				m[k] = n
			}
		}
	}
	return m
}

// blkio adds the bytes and operations of two blkio tables ("major:minor
// Op value" lines, then "Total value") and reports whether they had any
// device.
func (r *v1Reader) blkio(u *Usage, bytes, ops string) bool {
	any := false
	for _, t := range []struct {
		file        string
		read, write *uint64
	}{{bytes, &u.IOReadBytes, &u.IOWriteBytes}, {ops, &u.IOReads, &u.IOWrites}} {
		for _, line := range strings.Split(r.read(t.file), "\n") {
			f := strings.Fields(line)
			if len(f) != 3 {
				continue // "Total n", or empty
			}
			any = true
			if v, err := strconv.ParseUint(f[2], 10, 64); err == nil {
				addIO(t.read, t.write, f[1], v)
			}
		}
	}
	return any
}

func addIO(read, write *uint64, op string, v uint64) {
	switch strings.ToLower(op) {
	case "read":
		*read += v
	case "write":
		*write += v
	}
}

func readV2(dir string) (*Usage, error) {
	cg, err := cgroup2.Load(dir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(Root, dir)); err != nil {
		return nil, err
	}
	mt, err := cg.Stat()
	if err != nil {
		return nil, err
	}
	u := &Usage{}
	psi := &PSI{}
	if c := mt.CPU; c != nil {
		u.CPUUsageNanos, u.CPUUserNanos, u.CPUSystemNanos = c.UsageUsec*1000, c.UserUsec*1000, c.SystemUsec*1000
		u.CFSPeriods, u.CFSThrottledPeriods, u.CFSThrottledNanos = c.NrPeriods, c.NrThrottled, c.ThrottledUsec*1000
		psi.CPU = pressure(c.PSI)
	}
	if mem := mt.Memory; mem != nil {
		u.MemoryUsage, u.RSS, u.Cache, u.MappedFile = mem.Usage, mem.Anon, mem.File, mem.FileMapped
		u.WorkingSet = workingSet(mem.Usage, mem.InactiveFile)
		u.PageFaults, u.MajorPageFaults = mem.Pgfault, mem.Pgmajfault
		u.Swap, u.KernelUsage = mem.SwapUsage, mem.KernelStack+mem.Slab+mem.Sock
		if mem.UsageLimit < unlimited {
			u.MemoryLimit = mem.UsageLimit
		}
		psi.Memory = pressure(mem.PSI)
	}
	if ev := mt.MemoryEvents; ev != nil {
		u.Failcnt, u.OOMEvents = ev.Max, ev.OomKill
	}
	if p := mt.Pids; p != nil {
		u.Processes, u.PidsLimit = p.Current, p.Limit
	}
	if io := mt.Io; io != nil {
		for _, e := range io.Usage {
			u.IOReadBytes += e.Rbytes
			u.IOWriteBytes += e.Wbytes
			u.IOReads += e.Rios
			u.IOWrites += e.Wios
		}
		psi.IO = pressure(io.PSI)
	}
	if psi.CPU != nil || psi.Memory != nil || psi.IO != nil {
		u.PSI = psi
	}
	return u, nil
}

// pressure converts the library's reading of a *.pressure file; nil where
// the file is absent (a kernel without PSI).
func pressure(p *v2stats.PSIStats) *Pressure {
	if p == nil || p.Some == nil {
		return nil
	}
	data := func(d *v2stats.PSIData) PressureData {
		return PressureData{Avg10: d.GetAvg10(), Avg60: d.GetAvg60(), Avg300: d.GetAvg300(), TotalMicros: d.GetTotal()}
	}
	return &Pressure{Some: data(p.Some), Full: data(p.Full)}
}

func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile > usage {
		return 0
	}
	return usage - inactiveFile
}

// Pids lists the processes of the cgroup at dir (its cgroup.procs, in the
// pids hierarchy on v1, whose cgroup tree every process is in).
func Pids(mode cgroups.CGMode, dir string) ([]int, error) {
	base := Root
	if mode != cgroups.Unified {
		base = filepath.Join(Root, "pids")
	}
	b, err := os.ReadFile(filepath.Join(base, filepath.Clean("/"+dir), "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var pids []int
	for f := range strings.FieldsSeq(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids, nil
}

// Sample is a cgroup's cumulative CPU time at an instant: two of them give
// the CPU use between (NanoCores).
type Sample struct {
	At    time.Time
	Usage uint64 // nanoseconds
}

// NanoCores is the CPU use from prev to cur in nanocores (a billionth of a
// core), nil when prev is no earlier sample of the same cgroup (zero, or
// with more usage: the cgroup was made anew).
func NanoCores(prev, cur Sample) *uint64 {
	if prev.At.IsZero() || cur.Usage < prev.Usage || !cur.At.After(prev.At) {
		return nil
	}
	cores := uint64(float64(cur.Usage-prev.Usage) / cur.At.Sub(prev.At).Seconds())
	return &cores
}
