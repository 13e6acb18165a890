package container

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	"k8s.io/klog/v2"

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

// LayerRefresh is how often Stats measures a container's writable layer:
// a walk of its upper directory costs I/O and CPU in proportion to its
// files (millions, in some), and kubelet asks every few seconds. Between
// walks, Stats reports the last figure.
const LayerRefresh = 10 * time.Second

// layerUsage is the last measure of a container's writable layer.
type layerUsage struct {
	mu    sync.Mutex // held by the one walk that runs
	at    time.Time  // when it was taken; zero: never
	usage du.Usage
}

// Stats reads a container's usage from its cgroup and upper directory
// (measured at most once per LayerRefresh, see layerUsage).
func (m *Manager) Stats(id string) (*Stats, error) {
	c, err := m.Get(id)
	if err != nil {
		return nil, err
	}
	st := &Stats{Timestamp: m.now(), WritableMount: m.opts.Root}
	m.mu.Lock()
	lu := m.layers[c.ID]
	if lu == nil && m.containers[c.ID] != nil {
		lu = &layerUsage{}
		m.layers[c.ID] = lu
	}
	m.mu.Unlock()
	if lu != nil {
		u := m.layerUsage(lu, filepath.Join(m.dir(c.ID), "upper"))
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
	defer m.mu.Unlock()
	if m.containers[c.ID] == nil {
		return st, nil // removed meanwhile: keep no sample
	}
	if prev, ok := m.cpu[c.ID]; ok && st.CPUUsageNanos >= prev.usage && st.Timestamp.After(prev.at) {
		cores := uint64(float64(st.CPUUsageNanos-prev.usage) / st.Timestamp.Sub(prev.at).Seconds())
		st.CPUNanoCores = &cores
	}
	m.cpu[c.ID] = cpuSample{at: st.Timestamp, usage: st.CPUUsageNanos}
	return st, nil
}

// layerUsage returns the usage of the upper directory upper, walking it
// when its last measure is LayerRefresh old: one walk at a time per
// container, outside the manager's lock; callers that come meanwhile wait
// for its figure. A walk that fails keeps the last figure until the next.
func (m *Manager) layerUsage(lu *layerUsage, upper string) du.Usage {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if now := m.now(); lu.at.IsZero() || now.Sub(lu.at) >= LayerRefresh {
		walk := m.walk
		if walk == nil {
			walk = du.Walk
		}
		if u, err := walk(upper); err == nil {
			lu.usage = u
		} else if !errors.Is(err, os.ErrNotExist) {
			klog.V(2).InfoS("Measuring a container's writable layer", "dir", upper, "err", err)
		}
		lu.at = now
	}
	return lu.usage
}

// now is the manager's clock (tests set clock).
func (m *Manager) now() time.Time {
	if m.clock != nil {
		return m.clock()
	}
	return time.Now()
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
