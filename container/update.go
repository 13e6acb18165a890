package container

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/containerd/cgroups/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/cpuset"

	"github.com/pier-runtime/pier/cgroup"
)

// ErrBelowUsage: a memory limit lower than what the container uses now.
// Lowering it there would make the kernel reclaim or, failing that, refuse
// (cgroup v1) or OOM-kill the container (v2); the CRI layer answers
// FailedPrecondition, as kubelet treats a resize it cannot do yet.
var ErrBelowUsage = errors.New("memory limit below the container's current usage")

// Bounds on what a resource update may carry (every CRI field is
// untrusted): the kernel's ranges for CPU shares, CFS period and quota,
// and sizes far above anything a cgroup file takes.
const (
	minShares, maxShares = 2, 262144            // cpu.shares (v1); v2's weight is derived from it
	minPeriod, maxPeriod = 1000, 1000000        // cpu.cfs_period_us, µs
	minQuota, maxQuota   = 1000, int64(1) << 44 // cpu.cfs_quota_us, µs
	maxUnifiedKeys       = 64
	maxHugepageLimits    = 16
	maxValueLen          = 4096
)

var (
	unifiedKey   = regexp.MustCompile(`^[a-z][a-z0-9_]*\.[A-Za-z0-9_.]+$`) // hugetlb.2MB.max
	hugepageSize = regexp.MustCompile(`^[1-9][0-9]*(KB|MB|GB|TB|PB)$`)
)

// CheckResources refuses CRI Linux resources with a value out of the
// kernel's range, or malformed: ErrInvalid, saying which field. Zero
// values mean "unchanged" and pass.
func CheckResources(r *runtimeapi.LinuxContainerResources) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: resources: "+format, append([]any{ErrInvalid}, a...)...)
	}
	if v := r.GetCpuShares(); v != 0 && (v < minShares || v > maxShares) {
		return bad("cpu_shares %d is out of the kernel's range %d-%d", v, minShares, maxShares)
	}
	if v := r.GetCpuPeriod(); v != 0 && (v < minPeriod || v > maxPeriod) {
		return bad("cpu_period %d µs is out of the kernel's range %d-%d", v, minPeriod, maxPeriod)
	}
	if v := r.GetCpuQuota(); v != 0 && v != -1 && (v < minQuota || v > maxQuota) {
		return bad("cpu_quota %d µs is out of the kernel's range %d-%d (or -1, no limit)", v, minQuota, maxQuota)
	}
	if v := r.GetMemoryLimitInBytes(); v < 0 {
		return bad("memory_limit_in_bytes %d is negative (0 leaves the limit as it is)", v)
	}
	if v := r.GetMemorySwapLimitInBytes(); v < -1 {
		return bad("memory_swap_limit_in_bytes %d is below -1 (no limit)", v)
	}
	if v := r.GetOomScoreAdj(); v < -1000 || v > 1000 {
		return bad("oom_score_adj %d is out of the range -1000-1000", v)
	}
	for name, set := range map[string]string{"cpuset_cpus": r.GetCpusetCpus(), "cpuset_mems": r.GetCpusetMems()} {
		if len(set) > maxValueLen {
			return bad("%s is longer than %d bytes", name, maxValueLen)
		}
		if _, err := cpuset.Parse(set); err != nil {
			return bad("%s %q is not a list such as 0-3,6: %v", name, set, err)
		}
	}
	if n := len(r.GetHugepageLimits()); n > maxHugepageLimits {
		return bad("%d hugepage limits; at most %d", n, maxHugepageLimits)
	}
	seen := map[string]bool{}
	for _, h := range r.GetHugepageLimits() {
		if !hugepageSize.MatchString(h.GetPageSize()) {
			return bad("hugepage page size %q is not a size such as 2MB or 1GB", h.GetPageSize())
		}
		if seen[h.GetPageSize()] {
			return bad("hugepage page size %s is given twice", h.GetPageSize())
		}
		seen[h.GetPageSize()] = true
	}
	if n := len(r.GetUnified()); n > maxUnifiedKeys {
		return bad("%d unified keys; at most %d", n, maxUnifiedKeys)
	}
	for k, v := range r.GetUnified() {
		if !unifiedKey.MatchString(k) || strings.Contains(k, "..") {
			return bad("unified key %q is not a cgroup v2 file name such as memory.high", k)
		}
		if len(v) > maxValueLen || strings.ContainsAny(v, "\n\x00") {
			return bad("unified value of %s is longer than %d bytes or has a newline or NUL", k, maxValueLen)
		}
	}
	return nil
}

// CurrentResources are the container's CRI Linux resources now: those of its
// last update, else those of its config.
func (c *Container) CurrentResources() *runtimeapi.LinuxContainerResources {
	if len(c.Resources) > 0 {
		r := &runtimeapi.LinuxContainerResources{}
		if err := protojson.Unmarshal(c.Resources, r); err == nil {
			return r
		}
		klog.ErrorS(nil, "Unreadable resources in a container's record; reporting its config's", "id", c.ID)
	}
	return c.config.GetLinux().GetResources()
}

// mergeResources is cur with what update sets: each of its non-zero
// fields, its hugepage limits by page size and its unified keys.
func mergeResources(cur, update *runtimeapi.LinuxContainerResources) *runtimeapi.LinuxContainerResources {
	out := &runtimeapi.LinuxContainerResources{}
	if cur != nil {
		out = proto.Clone(cur).(*runtimeapi.LinuxContainerResources)
	}
	set := func(dst *int64, v int64) {
		if v != 0 {
			*dst = v
		}
	}
	set(&out.CpuPeriod, update.GetCpuPeriod())
	set(&out.CpuQuota, update.GetCpuQuota())
	set(&out.CpuShares, update.GetCpuShares())
	set(&out.MemoryLimitInBytes, update.GetMemoryLimitInBytes())
	set(&out.MemorySwapLimitInBytes, update.GetMemorySwapLimitInBytes())
	set(&out.OomScoreAdj, update.GetOomScoreAdj())
	if v := update.GetCpusetCpus(); v != "" {
		out.CpusetCpus = v
	}
	if v := update.GetCpusetMems(); v != "" {
		out.CpusetMems = v
	}
	for _, h := range update.GetHugepageLimits() {
		i := slices.IndexFunc(out.HugepageLimits, func(o *runtimeapi.HugepageLimit) bool { return o.GetPageSize() == h.GetPageSize() })
		if i < 0 {
			out.HugepageLimits = append(out.HugepageLimits, proto.Clone(h).(*runtimeapi.HugepageLimit))
		} else {
			out.HugepageLimits[i].Limit = h.GetLimit()
		}
	}
	if len(update.GetUnified()) > 0 {
		if out.Unified == nil {
			out.Unified = map[string]string{}
		}
		maps.Copy(out.Unified, update.GetUnified())
	}
	return out
}

// ociResources is the OCI form of CRI resources, as the container's spec
// had it at create, without the limits whose controller the node lacks.
func (m *Manager) ociResources(r *runtimeapi.LinuxContainerResources) (*specs.LinuxResources, error) {
	s := &specs.Spec{}
	if err := WithResources(r)(s); err != nil {
		return nil, err
	}
	if err := WithResourcesFit(m.opts.Cgroups)(s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if s.Linux == nil || s.Linux.Resources == nil {
		return &specs.LinuxResources{}, nil
	}
	return s.Linux.Resources, nil
}

// UpdateResources changes the cgroup limits of a created or running
// container through its runtime's update, and records them: its status
// reports them, and a restarted pierd keeps them. Fields left zero keep
// their value. A created container's cgroup exists (the runtime's create
// made it), so the limits hold from its start on. An exited container is
// ErrNotRunning, as CRI-O answers; a memory limit below the container's
// usage is ErrBelowUsage.
func (m *Manager) UpdateResources(ctx context.Context, id string, update *runtimeapi.LinuxContainerResources) error {
	c, err := m.updateResources(ctx, id, update, true)
	if err != nil {
		return err
	}
	m.hooks().PostUpdateContainer(ctx, m.podOf(c), c)
	return nil
}

// ApplyResources is UpdateResources without the hooks: for the updates
// the hooks (NRI plugins) ask for themselves.
func (m *Manager) ApplyResources(ctx context.Context, id string, update *runtimeapi.LinuxContainerResources) error {
	_, err := m.updateResources(ctx, id, update, false)
	return err
}

// updateResources is UpdateResources, which hooks, if set, may adjust; it
// returns a copy of the container updated.
func (m *Manager) updateResources(ctx context.Context, id string, update *runtimeapi.LinuxContainerResources, hooks bool) (*Container, error) {
	if err := CheckResources(update); err != nil {
		return nil, err
	}
	c, l, err := m.client(id)
	if err != nil {
		return nil, err
	}
	if err := updatable(c, l); err != nil {
		return nil, err
	}
	// One update at a time per container, so that the last one recorded is
	// the last one applied.
	slot := l.resize
	select {
	case slot <- struct{}{}:
		defer func() { <-slot }()
	case <-ctx.Done():
		return nil, fmt.Errorf("container %s: waiting for another update of its resources: %w", c.ID, ctx.Err())
	}
	select {
	case <-l.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if l.err != nil {
		return nil, fmt.Errorf("%w: container %s: its runtime could not create it: %v", ErrNotRunning, c.ID, l.err)
	}
	// As it is now, with the resources of the update before.
	if c, l, err = m.client(id); err != nil {
		return nil, err
	}
	if err := updatable(c, l); err != nil {
		return nil, err
	}
	current := c.CurrentResources()
	merged := mergeResources(current, update)
	if hooks {
		if merged, err = m.hooks().UpdateContainer(ctx, m.podOf(c), c.copy(), merged); err != nil {
			return nil, fmt.Errorf("update the resources of container %s: %w", c.ID, err)
		}
	}
	if mem, swap := merged.GetMemoryLimitInBytes(), merged.GetMemorySwapLimitInBytes(); mem > 0 && swap > 0 && swap < mem {
		return nil, fmt.Errorf("%w: resources: memory_swap_limit_in_bytes %d is below memory_limit_in_bytes %d (it counts memory and swap together): raise both", ErrInvalid, swap, mem)
	}
	res, err := m.ociResources(merged)
	if err != nil {
		return nil, err
	}
	// A lowered (or first) memory limit, as kubelet checks it.
	if limit, was := update.GetMemoryLimitInBytes(), current.GetMemoryLimitInBytes(); limit > 0 && (was == 0 || limit < was) {
		if usage := memoryUsage(c.Cgroup); usage > uint64(limit) {
			return nil, fmt.Errorf("%w: container %s uses %d bytes of memory; the new limit is %d: free memory in the container first, or keep a higher limit", ErrBelowUsage, c.ID, usage, limit)
		}
	}
	rt := m.runtimeOf(c)
	if rt == nil {
		return nil, fmt.Errorf("%w: container %s: runtime handler %q is gone", ErrNotRunning, c.ID, c.Handler)
	}
	if err := rt.Update(ctx, c.ID, res); err != nil {
		switch {
		case ctx.Err() == nil && exited(ctx, l.client):
			return nil, fmt.Errorf("%w: container %s exited: %v", ErrNotRunning, c.ID, err)
		case update.GetMemoryLimitInBytes() > 0 && strings.Contains(err.Error(), "device or resource busy"):
			// cgroup v1 refuses a limit it cannot reclaim down to.
			return nil, fmt.Errorf("%w: container %s: %v", ErrBelowUsage, c.ID, err)
		}
		return nil, fmt.Errorf("update the resources of container %s: %w", c.ID, err)
	}
	raw, err := protojson.Marshal(merged)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.containers[c.ID]
	if cur == nil {
		return nil, fmt.Errorf("%w: container %s was removed while its resources were updated", ErrNotFound, c.ID)
	}
	cur.Resources = raw
	if err := m.save(cur); err != nil {
		return nil, fmt.Errorf("record the new resources of container %s (they apply; a restarted pierd reports the previous ones): %w", c.ID, err)
	}
	klog.V(2).InfoS("Container resources updated", "id", c.ID, "resources", merged)
	return cur.copy(), nil
}

// updatable refuses a container that is neither created nor running, or
// whose shim pierd does not follow.
func updatable(c *Container, l *live) error {
	if l == nil || c.State != Running && c.State != Created {
		return fmt.Errorf("%w: container %s is %s: only a created or running container's resources can be updated", ErrNotRunning, c.ID, stateName(c.State))
	}
	return nil
}

// memoryUsage is the memory a cgroup uses now (v1 usage_in_bytes, v2
// memory.current), as kubelet reads it for a resize; 0 if unknown.
func memoryUsage(dir string) uint64 {
	if dir == "" {
		return 0
	}
	u, err := cgroup.ReadUsage(cgroups.Mode(), dir)
	if err != nil {
		return 0
	}
	return u.MemoryUsage
}
