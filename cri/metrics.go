package cri

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/cgroups/v3"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/sandbox"
)

// The metrics RPCs (ListMetricDescriptors, ListPodSandboxMetrics,
// StreamPodSandboxMetrics) serve the cAdvisor families that kubelet shows
// on /metrics/cadvisor when its PodAndContainerStatsFromCRI gate is on:
// kubelet passes names, label keys and values through unchanged. Counters
// of seconds are whole seconds (the CRI's values are integers), as CRI-O
// reports them.

// metricLabels are every family's first label keys, cAdvisor's.
var metricLabels = []string{"container", "id", "image", "name", "namespace", "pod"}

// metricInput is what one container's (or, for the network families, one
// pod's) metrics are made of.
type metricInput struct {
	c      *container.Container // nil for the pod's own (network) metrics
	st     *container.Stats
	procs  procCounts
	ifaces []sandbox.Interface
	fs     unix.Statfs_t
	now    time.Time
}

// sample is one value of a family, with the values of its extra labels.
type sample struct {
	labels []string
	value  uint64
}

// family is one metric family: its name, help, type, extra label keys and
// how its samples are read.
type family struct {
	name, help string
	typ        runtimeapi.MetricType
	extra      []string
	pod        bool // a pod's (network) family, not a container's
	values     func(in *metricInput) []sample
}

const (
	counter = runtimeapi.MetricType_COUNTER
	gauge   = runtimeapi.MetricType_GAUGE
)

func one(v uint64) []sample { return []sample{{value: v}} }

func seconds(nanos uint64) uint64 { return nanos / uint64(time.Second) }

// containerFamily is a container family of one unlabelled value.
func containerFamily(name, help string, typ runtimeapi.MetricType, v func(in *metricInput) uint64) family {
	return family{name: name, help: help, typ: typ, values: func(in *metricInput) []sample { return one(v(in)) }}
}

// resources is a container's resource limits, as created.
func resources(in *metricInput) *runtimeapi.LinuxContainerResources {
	return in.c.CRIConfig().GetLinux().GetResources()
}

// pressureFamily is a PSI family: present where the kernel has PSI (cgroup
// v2; cgroup v1 has none).
func pressureFamily(resource, kind string, full bool, get func(*cgroup.PSI) *cgroup.Pressure) family {
	return family{
		name: "container_pressure_" + resource + "_" + kind + "_seconds_total",
		help: "Total time duration " + map[bool]string{false: "tasks in the container have waited", true: "no tasks in the container were making progress"}[full] + " due to " + resource + " pressure, in seconds.",
		typ:  counter,
		values: func(in *metricInput) []sample {
			if in.st.PSI == nil || get(in.st.PSI) == nil {
				return nil
			}
			p := get(in.st.PSI)
			d := p.Some
			if full {
				d = p.Full
			}
			return one(d.TotalMicros / 1e6)
		},
	}
}

func netFamily(name, help string, v func(i sandbox.Interface) uint64) family {
	return family{name: name, help: help, typ: counter, extra: []string{"interface"}, pod: true,
		values: func(in *metricInput) []sample {
			var out []sample
			for _, i := range in.ifaces {
				out = append(out, sample{labels: []string{i.Name}, value: v(i)})
			}
			return out
		}}
}

var families = []family{
	containerFamily("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", counter, func(in *metricInput) uint64 { return seconds(in.st.CPUUsageNanos) }),
	containerFamily("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", counter, func(in *metricInput) uint64 { return seconds(in.st.CPUUserNanos) }),
	containerFamily("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", counter, func(in *metricInput) uint64 { return seconds(in.st.CPUSystemNanos) }),
	containerFamily("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", counter, func(in *metricInput) uint64 { return in.st.CFSPeriods }),
	containerFamily("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", counter, func(in *metricInput) uint64 { return in.st.CFSThrottledPeriods }),
	containerFamily("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", counter, func(in *metricInput) uint64 { return seconds(in.st.CFSThrottledNanos) }),
	containerFamily("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", gauge, func(in *metricInput) uint64 { return in.st.MemoryUsage }),
	containerFamily("container_memory_working_set_bytes", "Current working set in bytes.", gauge, func(in *metricInput) uint64 { return in.st.WorkingSet }),
	containerFamily("container_memory_rss", "Size of RSS in bytes.", gauge, func(in *metricInput) uint64 { return in.st.RSS }),
	containerFamily("container_memory_cache", "Number of bytes of page cache memory.", gauge, func(in *metricInput) uint64 { return in.st.Cache }),
	containerFamily("container_memory_mapped_file", "Size of memory mapped files in bytes.", gauge, func(in *metricInput) uint64 { return in.st.MappedFile }),
	containerFamily("container_memory_swap", "Container swap usage in bytes.", gauge, func(in *metricInput) uint64 { return in.st.Swap }),
	containerFamily("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", gauge, func(in *metricInput) uint64 { return in.st.KernelUsage }),
	containerFamily("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes (cgroup v1; v2 has no such mark).", gauge, func(in *metricInput) uint64 { return in.st.MemoryMaxUsage }),
	containerFamily("container_memory_failcnt", "Number of memory usage hits limits.", counter, func(in *metricInput) uint64 { return in.st.Failcnt }),
	containerFamily("container_oom_events_total", "Count of out of memory events observed for the container (cgroup v2).", counter, func(in *metricInput) uint64 { return in.st.OOMEvents }),
	{name: "container_memory_failures_total", help: "Cumulative count of memory allocation failures.", typ: counter, extra: []string{"failure_type", "scope"},
		values: func(in *metricInput) []sample {
			return []sample{
				{labels: []string{"pgfault", "container"}, value: in.st.PageFaults},
				{labels: []string{"pgmajfault", "container"}, value: in.st.MajorPageFaults},
			}
		}},
	containerFamily("container_processes", "Number of processes running inside the container.", gauge, func(in *metricInput) uint64 { return in.procs.processes }),
	containerFamily("container_threads", "Number of threads running inside the container.", gauge, func(in *metricInput) uint64 { return in.st.Processes }),
	containerFamily("container_threads_max", "Maximum number of threads allowed inside the container, 0 for unlimited.", gauge, func(in *metricInput) uint64 { return in.st.PidsLimit }),
	containerFamily("container_file_descriptors", "Number of open file descriptors for the container.", gauge, func(in *metricInput) uint64 { return in.procs.fds }),
	containerFamily("container_sockets", "Number of open sockets for the container.", gauge, func(in *metricInput) uint64 { return in.procs.sockets }),
	containerFamily("container_fs_usage_bytes", "Number of bytes that are consumed by the container's writable layer.", gauge, func(in *metricInput) uint64 { return in.st.WritableBytes }),
	containerFamily("container_fs_limit_bytes", "Number of bytes that can be consumed by the container on the file system of its writable layer.", gauge, func(in *metricInput) uint64 { return in.fs.Blocks * uint64(in.fs.Bsize) }),
	containerFamily("container_fs_inodes_total", "Number of inodes on the file system of the container's writable layer.", gauge, func(in *metricInput) uint64 { return in.fs.Files }),
	containerFamily("container_fs_inodes_free", "Number of available inodes on the file system of the container's writable layer.", gauge, func(in *metricInput) uint64 { return in.fs.Ffree }),
	containerFamily("container_fs_reads_bytes_total", "Cumulative count of bytes read.", counter, func(in *metricInput) uint64 { return in.st.IOReadBytes }),
	containerFamily("container_fs_writes_bytes_total", "Cumulative count of bytes written.", counter, func(in *metricInput) uint64 { return in.st.IOWriteBytes }),
	containerFamily("container_fs_reads_total", "Cumulative count of reads completed.", counter, func(in *metricInput) uint64 { return in.st.IOReads }),
	containerFamily("container_fs_writes_total", "Cumulative count of writes completed.", counter, func(in *metricInput) uint64 { return in.st.IOWrites }),
	{name: "container_blkio_device_usage_total", help: "Blkio device bytes usage, by device and operation.", typ: counter, extra: []string{"device", "major", "minor", "operation"},
		// Per-device figures are not read (cgroup.Usage sums the devices):
		// critest lists this family as optional.
		values: func(in *metricInput) []sample { return nil }},
	containerFamily("container_spec_cpu_period", "CPU period of the container.", gauge, func(in *metricInput) uint64 { return uint64(max(resources(in).GetCpuPeriod(), 0)) }),
	containerFamily("container_spec_cpu_quota", "CPU quota of the container.", gauge, func(in *metricInput) uint64 { return uint64(max(resources(in).GetCpuQuota(), 0)) }),
	containerFamily("container_spec_cpu_shares", "CPU share of the container.", gauge, func(in *metricInput) uint64 { return uint64(max(resources(in).GetCpuShares(), 0)) }),
	containerFamily("container_spec_memory_limit_bytes", "Memory limit for the container.", gauge, func(in *metricInput) uint64 { return uint64(max(resources(in).GetMemoryLimitInBytes(), 0)) }),
	containerFamily("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", gauge, func(in *metricInput) uint64 { return uint64(max(resources(in).GetMemorySwapLimitInBytes(), 0)) }),
	containerFamily("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", gauge, func(in *metricInput) uint64 { return uint64(max(in.c.StartedAt.Unix(), 0)) }),
	containerFamily("container_last_seen", "Last time a container was seen by the exporter.", gauge, func(in *metricInput) uint64 { return uint64(in.now.Unix()) }),
	pressureFamily("cpu", "waiting", false, func(p *cgroup.PSI) *cgroup.Pressure { return p.CPU }),
	pressureFamily("cpu", "stalled", true, func(p *cgroup.PSI) *cgroup.Pressure { return p.CPU }),
	pressureFamily("memory", "waiting", false, func(p *cgroup.PSI) *cgroup.Pressure { return p.Memory }),
	pressureFamily("memory", "stalled", true, func(p *cgroup.PSI) *cgroup.Pressure { return p.Memory }),
	pressureFamily("io", "waiting", false, func(p *cgroup.PSI) *cgroup.Pressure { return p.IO }),
	pressureFamily("io", "stalled", true, func(p *cgroup.PSI) *cgroup.Pressure { return p.IO }),
	netFamily("container_network_receive_bytes_total", "Cumulative count of bytes received.", func(i sandbox.Interface) uint64 { return i.RxBytes }),
	netFamily("container_network_receive_packets_total", "Cumulative count of packets received.", func(i sandbox.Interface) uint64 { return i.RxPackets }),
	netFamily("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.", func(i sandbox.Interface) uint64 { return i.RxErrors }),
	netFamily("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving.", func(i sandbox.Interface) uint64 { return i.RxDrops }),
	netFamily("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", func(i sandbox.Interface) uint64 { return i.TxBytes }),
	netFamily("container_network_transmit_packets_total", "Cumulative count of packets transmitted.", func(i sandbox.Interface) uint64 { return i.TxPackets }),
	netFamily("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting.", func(i sandbox.Interface) uint64 { return i.TxErrors }),
	netFamily("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting.", func(i sandbox.Interface) uint64 { return i.TxDrops }),
}

// ListMetricDescriptors describes the families ListPodSandboxMetrics
// returns.
func (s *RuntimeService) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	resp := &runtimeapi.ListMetricDescriptorsResponse{}
	for _, f := range families {
		resp.Descriptors = append(resp.Descriptors, &runtimeapi.MetricDescriptor{
			Name: f.name, Help: f.help, LabelKeys: append(append([]string{}, metricLabels...), f.extra...),
		})
	}
	return resp, nil
}

// ListPodSandboxMetrics returns the metrics of the ready pods and their
// running containers.
func (s *RuntimeService) ListPodSandboxMetrics(ctx context.Context, req *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	return &runtimeapi.ListPodSandboxMetricsResponse{PodMetrics: s.podMetrics()}, nil
}

// StreamPodSandboxMetrics is ListPodSandboxMetrics in pages (sendPages).
func (s *RuntimeService) StreamPodSandboxMetrics(req *runtimeapi.StreamPodSandboxMetricsRequest, stream runtimeapi.RuntimeService_StreamPodSandboxMetricsServer) error {
	return sendPages(s.podMetrics(), func(page []*runtimeapi.PodSandboxMetrics) error {
		return stream.Send(&runtimeapi.StreamPodSandboxMetricsResponse{PodSandboxMetrics: page})
	})
}

func (s *RuntimeService) podMetrics() []*runtimeapi.PodSandboxMetrics {
	out, _ := inParallel(s.opts.Pods.List(sandbox.Filter{State: sandbox.Ready}), func(sb *sandbox.Sandbox) (*runtimeapi.PodSandboxMetrics, error) {
		return s.onePodMetrics(sb), nil
	})
	return out
}

func (s *RuntimeService) onePodMetrics(sb *sandbox.Sandbox) *runtimeapi.PodSandboxMetrics {
	now := time.Now()
	pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: sb.ID}
	cs := s.opts.Containers.List(container.Filter{PodID: sb.ID, State: container.Running})
	ifaces, _ := sb.Interfaces(podPids(cs)...) // none readable: no network families
	pm.Metrics = metrics(&metricInput{ifaces: ifaces, now: now}, []string{"POD", sb.ID, "", sb.ID, sb.Config.Namespace, sb.Config.Name}, true)
	for _, c := range cs {
		if c.PodID != sb.ID {
			continue
		}
		st, err := s.opts.Containers.Stats(c.ID)
		if err != nil {
			if !errors.Is(err, container.ErrNotFound) { // else removed meanwhile
				klog.V(2).InfoS("Reading a container's metrics", "id", c.ID, "err", err)
			}
			continue
		}
		in := &metricInput{c: c, st: st, now: now, procs: countProcs(c.Cgroup)}
		unix.Statfs(st.WritableMount, &in.fs) // zero figures when it fails
		base := []string{c.CRIConfig().GetMetadata().GetName(), c.ID, c.ImageRef, c.ID, sb.Config.Namespace, sb.Config.Name}
		pm.ContainerMetrics = append(pm.ContainerMetrics, &runtimeapi.ContainerMetrics{ContainerId: c.ID, Metrics: metrics(in, base, false)})
	}
	return pm
}

// metrics is the samples of the pod's (pod) or a container's families.
func metrics(in *metricInput, base []string, pod bool) []*runtimeapi.Metric {
	var out []*runtimeapi.Metric
	ts := in.now.UnixNano()
	for _, f := range families {
		if f.pod != pod {
			continue
		}
		for _, s := range f.values(in) {
			out = append(out, &runtimeapi.Metric{
				Name: f.name, Timestamp: ts, MetricType: f.typ,
				LabelValues: append(append([]string{}, base...), s.labels...),
				Value:       &runtimeapi.UInt64Value{Value: s.value},
			})
		}
	}
	return out
}

// procCounts are the processes of a container's cgroup and their open
// files.
type procCounts struct{ processes, fds, sockets uint64 }

// maxCountedProcs bounds the /proc reads of one container's metrics.
const maxCountedProcs = 1024

func countProcs(dir string) procCounts {
	var pc procCounts
	if dir == "" {
		return pc
	}
	pids, _ := cgroup.Pids(cgroups.Mode(), dir)
	pc.processes = uint64(len(pids))
	for i, pid := range pids {
		if i == maxCountedProcs {
			break
		}
		fdDir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
		ents, err := os.ReadDir(fdDir)
		if err != nil {
			continue // ended meanwhile
		}
		pc.fds += uint64(len(ents))
		for _, e := range ents {
			if l, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
				pc.sockets++
			}
		}
	}
	return pc
}
