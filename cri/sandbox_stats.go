package cri

import (
	"context"
	"errors"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sync/errgroup"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/sandbox"
)

// podSamples are the pods' last CPU samples, from which a pod's nanocores
// are computed as a container's are (cgroup.NanoCores).
type podSamples struct {
	mu sync.Mutex
	m  map[string]cgroup.Sample
}

// swap records cur as pod id's sample and returns the one before.
func (p *podSamples) swap(id string, cur cgroup.Sample) cgroup.Sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = map[string]cgroup.Sample{}
	}
	prev := p.m[id]
	p.m[id] = cur
	return prev
}

// drop forgets pod id's sample.
func (p *podSamples) drop(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.m, id)
}

// keep drops the samples of pods not in ids (removed).
func (p *podSamples) keep(ids map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for id := range p.m {
		if !ids[id] {
			delete(p.m, id)
		}
	}
}

// PodSandboxStats returns a ready pod's resource usage.
func (s *RuntimeService) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	sb, err := s.opts.Pods.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if sb.State != sandbox.Ready {
		return nil, invalidState("pod %s is not ready: a stopped pod has no usage to report", sb.ID)
	}
	st, err := s.podStats(sb)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: st}, nil
}

// ListPodSandboxStats returns the usage of the ready pods, filtered by id
// (or id prefix) and labels.
func (s *RuntimeService) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	stats, err := s.listPodStats(req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: stats}, nil
}

// StreamPodSandboxStats is ListPodSandboxStats in pages (sendPages).
func (s *RuntimeService) StreamPodSandboxStats(req *runtimeapi.StreamPodSandboxStatsRequest, stream runtimeapi.RuntimeService_StreamPodSandboxStatsServer) error {
	stats, err := s.listPodStats(req.GetFilter())
	if err != nil {
		return toStatus(err)
	}
	return sendPages(stats, func(page []*runtimeapi.PodSandboxStats) error {
		return stream.Send(&runtimeapi.StreamPodSandboxStatsResponse{PodSandboxStats: page})
	})
}

// listPodStats is the stats of the ready pods that match f, as containerd
// lists them: a pod not ready (stopped) has none.
func (s *RuntimeService) listPodStats(f *runtimeapi.PodSandboxStatsFilter) ([]*runtimeapi.PodSandboxStats, error) {
	pods := s.opts.Pods.List(sandbox.Filter{ID: f.GetId(), State: sandbox.Ready, Labels: f.GetLabelSelector()})
	if f.GetId() == "" && len(f.GetLabelSelector()) == 0 {
		ids := map[string]bool{}
		for _, sb := range pods {
			ids[sb.ID] = true
		}
		s.podCPU.keep(ids)
	}
	return inParallel(pods, s.podStats)
}

// inParallel returns f of each item, in order, reading GOMAXPROCS at a
// time: a cgroup's statistics are a few dozen small files, whose reads cost
// CPU in the kernel. A nil result (an item gone meanwhile) is left out.
func inParallel[T any, R comparable](items []T, f func(T) (R, error)) ([]R, error) {
	out := make([]R, len(items))
	var g errgroup.Group
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, it := range items {
		g.Go(func() (err error) {
			out[i], err = f(it)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var zero R
	return slices.DeleteFunc(out, func(r R) bool { return r == zero }), nil
}

// podStats reads a pod's usage: its cgroup's (the cgroup parent kubelet
// names), its network namespace's interfaces, and its containers'. A pod
// without a cgroup parent (crictl's, often) has no cgroup of its own: its
// figures are the sum of its containers'.
func (s *RuntimeService) podStats(sb *sandbox.Sandbox) (*runtimeapi.PodSandboxStats, error) {
	var containers []*runtimeapi.ContainerStats
	var sum cgroup.Usage
	cs := s.opts.Containers.List(container.Filter{PodID: sb.ID})
	for _, c := range cs {
		if c.PodID != sb.ID {
			continue // an id prefix matched another pod
		}
		st, err := s.opts.Containers.Stats(c.ID)
		if errors.Is(err, container.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		containers = append(containers, containerStats(c, st))
		addUsage(&sum, &st.Usage)
	}
	now := time.Now()
	u := &sum
	if dir := s.opts.Cgroups.Pod(sb.Config.CgroupParent); dir != "" {
		var err error
		if u, err = cgroup.ReadUsage(cgroups.Mode(), dir); err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				klog.V(2).InfoS("Reading a pod's cgroup", "pod", sb.ID, "cgroup", dir, "err", err)
			}
			u = &sum // kubelet has not made it (yet): the containers' then
		}
	}
	cur := cgroup.Sample{At: now, Usage: u.CPUUsageNanos}
	ts := now.UnixNano()
	linux := &runtimeapi.LinuxPodSandboxStats{
		Cpu:        cpuUsage(now, u, cgroup.NanoCores(s.podCPU.swap(sb.ID, cur), cur)),
		Memory:     memoryUsage(now, u),
		Io:         ioUsage(now, u),
		Process:    &runtimeapi.ProcessUsage{Timestamp: ts, ProcessCount: &runtimeapi.UInt64Value{Value: u.Processes}},
		Containers: containers,
	}
	ifaces, err := sb.Interfaces(podPids(cs)...)
	if err != nil {
		klog.V(2).InfoS("Reading a pod's network interfaces", "pod", sb.ID, "err", err)
	}
	if ifaces != nil {
		linux.Network = &runtimeapi.NetworkUsage{Timestamp: ts}
		for _, i := range ifaces {
			iu := &runtimeapi.NetworkInterfaceUsage{Name: i.Name,
				RxBytes: &runtimeapi.UInt64Value{Value: i.RxBytes}, RxErrors: &runtimeapi.UInt64Value{Value: i.RxErrors},
				TxBytes: &runtimeapi.UInt64Value{Value: i.TxBytes}, TxErrors: &runtimeapi.UInt64Value{Value: i.TxErrors}}
			linux.Network.Interfaces = append(linux.Network.Interfaces, iu)
			if i.Name == sandbox.DefaultInterface {
				linux.Network.DefaultInterface = iu
			}
		}
	}
	c := sb.Config
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: sb.ID, Metadata: podMetadata(c), Labels: c.Labels, Annotations: c.Annotations},
		Linux:      linux,
	}, nil
}

// podPids are pids that may be in a pod's network namespace: those of the
// cgroup of its first running container among cs.
func podPids(cs []*container.Container) []int {
	for _, c := range cs {
		if c.State == container.Running && c.Cgroup != "" {
			pids, _ := cgroup.Pids(cgroups.Mode(), c.Cgroup)
			return pids
		}
	}
	return nil // Interfaces enters the namespace
}

// addUsage adds a container's usage to its pod's, for a pod without a
// cgroup of its own.
func addUsage(sum, u *cgroup.Usage) {
	sum.CPUUsageNanos += u.CPUUsageNanos
	sum.CPUUserNanos += u.CPUUserNanos
	sum.CPUSystemNanos += u.CPUSystemNanos
	sum.MemoryUsage += u.MemoryUsage
	sum.WorkingSet += u.WorkingSet
	sum.RSS += u.RSS
	sum.Cache += u.Cache
	sum.PageFaults += u.PageFaults
	sum.MajorPageFaults += u.MajorPageFaults
	sum.Processes += u.Processes
}
