package cri

import (
	"context"
	"errors"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/container"
)

// ContainerStats returns a container's resource usage.
func (s *RuntimeService) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	c, err := s.opts.Containers.Get(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	st, err := s.opts.Containers.Stats(c.ID)
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: containerStats(c, st)}, nil
}

// ListContainerStats returns the usage of containers, filtered by id, pod
// and labels.
func (s *RuntimeService) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	stats, err := s.listContainerStats(req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListContainerStatsResponse{Stats: stats}, nil
}

// StreamContainerStats is ListContainerStats in pages (sendPages).
func (s *RuntimeService) StreamContainerStats(req *runtimeapi.StreamContainerStatsRequest, stream runtimeapi.RuntimeService_StreamContainerStatsServer) error {
	stats, err := s.listContainerStats(req.GetFilter())
	if err != nil {
		return toStatus(err)
	}
	return sendPages(stats, func(page []*runtimeapi.ContainerStats) error {
		return stream.Send(&runtimeapi.StreamContainerStatsResponse{ContainerStats: page})
	})
}

func (s *RuntimeService) listContainerStats(f *runtimeapi.ContainerStatsFilter) ([]*runtimeapi.ContainerStats, error) {
	cs := s.opts.Containers.List(container.Filter{ID: f.GetId(), PodID: f.GetPodSandboxId(), Labels: f.GetLabelSelector()})
	return inParallel(cs, func(c *container.Container) (*runtimeapi.ContainerStats, error) {
		st, err := s.opts.Containers.Stats(c.ID)
		if errors.Is(err, container.ErrNotFound) {
			return nil, nil // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		return containerStats(c, st), nil
	})
}

func containerStats(c *container.Container, st *container.Stats) *runtimeapi.ContainerStats {
	cfg := c.CRIConfig()
	ts := st.Timestamp.UnixNano()
	return &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{Id: c.ID, Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()},
		Cpu:        cpuUsage(st.Timestamp, &st.Usage, st.CPUNanoCores),
		Memory:     memoryUsage(st.Timestamp, &st.Usage),
		Io:         ioUsage(st.Timestamp, &st.Usage),
		WritableLayer: &runtimeapi.FilesystemUsage{
			Timestamp:  ts,
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: st.WritableMount},
			UsedBytes:  &runtimeapi.UInt64Value{Value: st.WritableBytes},
			InodesUsed: &runtimeapi.UInt64Value{Value: st.WritableInodes},
		},
	}
}

// cpuUsage, memoryUsage and ioUsage give a cgroup's usage (a container's,
// a pod's) as the CRI has it.
func cpuUsage(at time.Time, u *cgroup.Usage, nanoCores *uint64) *runtimeapi.CpuUsage {
	out := &runtimeapi.CpuUsage{Timestamp: at.UnixNano(), UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: u.CPUUsageNanos}}
	if nanoCores != nil {
		out.UsageNanoCores = &runtimeapi.UInt64Value{Value: *nanoCores}
	}
	if u.PSI != nil {
		out.Psi = psiStats(u.PSI.CPU)
	}
	return out
}

func memoryUsage(at time.Time, u *cgroup.Usage) *runtimeapi.MemoryUsage {
	out := &runtimeapi.MemoryUsage{
		Timestamp:       at.UnixNano(),
		WorkingSetBytes: &runtimeapi.UInt64Value{Value: u.WorkingSet},
		UsageBytes:      &runtimeapi.UInt64Value{Value: u.MemoryUsage},
		RssBytes:        &runtimeapi.UInt64Value{Value: u.RSS},
		PageFaults:      &runtimeapi.UInt64Value{Value: u.PageFaults},
		MajorPageFaults: &runtimeapi.UInt64Value{Value: u.MajorPageFaults},
	}
	if u.MemoryLimit > 0 && u.MemoryLimit >= u.WorkingSet {
		out.AvailableBytes = &runtimeapi.UInt64Value{Value: u.MemoryLimit - u.WorkingSet}
	}
	if u.PSI != nil {
		out.Psi = psiStats(u.PSI.Memory)
	}
	return out
}

// ioUsage is nil where there is no I/O pressure to report (cgroup v1, a
// kernel without PSI): the CRI's IoUsage holds only pressure.
func ioUsage(at time.Time, u *cgroup.Usage) *runtimeapi.IoUsage {
	if u.PSI == nil || u.PSI.IO == nil {
		return nil
	}
	return &runtimeapi.IoUsage{Timestamp: at.UnixNano(), Psi: psiStats(u.PSI.IO)}
}

func psiStats(p *cgroup.Pressure) *runtimeapi.PsiStats {
	if p == nil {
		return nil
	}
	data := func(d cgroup.PressureData) *runtimeapi.PsiData {
		return &runtimeapi.PsiData{Total: d.TotalMicros * 1000, Avg10: d.Avg10, Avg60: d.Avg60, Avg300: d.Avg300}
	}
	return &runtimeapi.PsiStats{Some: data(p.Some), Full: data(p.Full)}
}
