package container

import (
	"path/filepath"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"

	"github.com/pier-runtime/pier/internal/du"
)

// Stats is a container's resource usage. A container without processes
// (created, exited) has only its writable layer's usage.
type Stats struct {
	Timestamp       time.Time
	CPUUsageNanos   uint64  // cumulative CPU time
	CPUNanoCores    *uint64 // CPU use since the previous Stats call
	MemoryUsage     uint64
	WorkingSet      uint64 // usage less inactive file cache, as kubelet counts it
	RSS             uint64
	PageFaults      uint64
	MajorPageFaults uint64
	MemoryLimit     uint64 // 0 when unlimited
	WritableBytes   uint64 // of the container's upper directory
	WritableInodes  uint64
	WritableMount   string
}

type cpuSample struct {
	at    time.Time
	usage uint64
}

// Stats reads a container's usage from its cgroup and upper directory.
func (m *Manager) Stats(id string) (*Stats, error) {
	c, err := m.Get(id)
	if err != nil {
		return nil, err
	}
	st := &Stats{Timestamp: time.Now(), WritableMount: m.opts.Root}
	if u, err := du.Walk(filepath.Join(m.dir(c.ID), "upper")); err == nil {
		st.WritableBytes, st.WritableInodes = u.Bytes, u.Inodes
	}
	if c.State != Running || c.Cgroup == "" {
		return st, nil
	}
	if cgroups.Mode() == cgroups.Unified {
		readV2(c.Cgroup, st)
	} else {
		readV1(c.Cgroup, st)
	}
	m.mu.Lock()
	if prev, ok := m.cpu[c.ID]; ok && st.CPUUsageNanos >= prev.usage && st.Timestamp.After(prev.at) {
		cores := uint64(float64(st.CPUUsageNanos-prev.usage) / st.Timestamp.Sub(prev.at).Seconds())
		st.CPUNanoCores = &cores
	}
	m.cpu[c.ID] = cpuSample{at: st.Timestamp, usage: st.CPUUsageNanos}
	m.mu.Unlock()
	return st, nil
}

func readV1(path string, st *Stats) {
	cg, err := cgroup1.Load(cgroup1.StaticPath(path))
	if err != nil {
		return
	}
	mt, err := cg.Stat(cgroup1.IgnoreNotExist)
	if err != nil {
		return
	}
	if mt.CPU != nil && mt.CPU.Usage != nil {
		st.CPUUsageNanos = mt.CPU.Usage.Total
	}
	if mem := mt.Memory; mem != nil && mem.Usage != nil {
		st.MemoryUsage, st.RSS = mem.Usage.Usage, mem.TotalRSS
		st.WorkingSet = workingSet(mem.Usage.Usage, mem.TotalInactiveFile)
		st.PageFaults, st.MajorPageFaults = mem.TotalPgFault, mem.TotalPgMajFault
		if mem.Usage.Limit < 1<<62 {
			st.MemoryLimit = mem.Usage.Limit
		}
	}
}

func readV2(path string, st *Stats) {
	cg, err := cgroup2.Load(path)
	if err != nil {
		return
	}
	mt, err := cg.Stat()
	if err != nil {
		return
	}
	if mt.CPU != nil {
		st.CPUUsageNanos = mt.CPU.UsageUsec * 1000
	}
	if mem := mt.Memory; mem != nil {
		st.MemoryUsage, st.RSS = mem.Usage, mem.Anon
		st.WorkingSet = workingSet(mem.Usage, mem.InactiveFile)
		st.PageFaults, st.MajorPageFaults = mem.Pgfault, mem.Pgmajfault
		if mem.UsageLimit < 1<<62 {
			st.MemoryLimit = mem.UsageLimit
		}
	}
}

func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile > usage {
		return 0
	}
	return usage - inactiveFile
}
