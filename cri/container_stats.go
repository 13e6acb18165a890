package cri

import (
	"context"
	"errors"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

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
	f := req.GetFilter()
	resp := &runtimeapi.ListContainerStatsResponse{}
	for _, c := range s.opts.Containers.List(container.Filter{ID: f.GetId(), PodID: f.GetPodSandboxId(), Labels: f.GetLabelSelector()}) {
		st, err := s.opts.Containers.Stats(c.ID)
		if errors.Is(err, container.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		resp.Stats = append(resp.Stats, containerStats(c, st))
	}
	return resp, nil
}

func containerStats(c *container.Container, st *container.Stats) *runtimeapi.ContainerStats {
	cfg := c.CRIConfig()
	ts := st.Timestamp.UnixNano()
	out := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{Id: c.ID, Metadata: cfg.GetMetadata(), Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()},
		Cpu:        &runtimeapi.CpuUsage{Timestamp: ts, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: st.CPUUsageNanos}},
		Memory: &runtimeapi.MemoryUsage{
			Timestamp:       ts,
			WorkingSetBytes: &runtimeapi.UInt64Value{Value: st.WorkingSet},
			UsageBytes:      &runtimeapi.UInt64Value{Value: st.MemoryUsage},
			RssBytes:        &runtimeapi.UInt64Value{Value: st.RSS},
			PageFaults:      &runtimeapi.UInt64Value{Value: st.PageFaults},
			MajorPageFaults: &runtimeapi.UInt64Value{Value: st.MajorPageFaults},
		},
		WritableLayer: &runtimeapi.FilesystemUsage{
			Timestamp:  ts,
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: st.WritableMount},
			UsedBytes:  &runtimeapi.UInt64Value{Value: st.WritableBytes},
			InodesUsed: &runtimeapi.UInt64Value{Value: st.WritableInodes},
		},
	}
	if st.CPUNanoCores != nil {
		out.Cpu.UsageNanoCores = &runtimeapi.UInt64Value{Value: *st.CPUNanoCores}
	}
	if st.MemoryLimit > 0 && st.MemoryLimit >= st.WorkingSet {
		out.Memory.AvailableBytes = &runtimeapi.UInt64Value{Value: st.MemoryLimit - st.WorkingSet}
	}
	return out
}
