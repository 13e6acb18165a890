package container

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/internal/du"
)

// Stats is a container's resource usage: its cgroup's (zero when it has no
// processes: created, exited) and its writable layer's.
type Stats struct {
	cgroup.Usage
	Timestamp      time.Time
	CPUNanoCores   *uint64 // CPU use since the previous Stats call
	WritableBytes  uint64  // of the container's upper directory
	WritableInodes uint64
	WritableMount  string
}

// cpuSample is the last CPU usage Stats read of a container.
type cpuSample = cgroup.Sample

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
	if u, err := cgroup.ReadUsage(cgroups.Mode(), c.Cgroup); err == nil {
		st.Usage = *u
	} else if !errors.Is(err, os.ErrNotExist) {
		klog.V(2).InfoS("Reading a container's cgroup", "id", c.ID, "cgroup", c.Cgroup, "err", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.containers[c.ID] == nil {
		return st, nil // removed meanwhile: keep no sample
	}
	cur := cgroup.Sample{At: st.Timestamp, Usage: st.CPUUsageNanos}
	st.CPUNanoCores = cgroup.NanoCores(m.cpu[c.ID], cur)
	m.cpu[c.ID] = cur
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
