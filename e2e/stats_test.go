package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// statsPod runs a pod under a cgroup parent of its own (as kubelet names
// one per pod), removed with the pod.
func statsPod(t *testing.T, p *testenv.Pierd, name string, hostNet bool) (string, *runtimeapi.PodSandboxConfig, string) {
	t.Helper()
	cfg := podConfig(name)
	parent := "/pier-e2e-stats-" + name
	cfg.Linux.CgroupParent = parent
	if hostNet {
		cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}
	}
	t.Cleanup(func() { testenv.RemoveCgroupTree(parent) })
	return runPod(t, p, cfg), cfg, parent
}

// cgroupValue reads a number from a cgroup file of dir: file1 under the v1
// controller hierarchy ctl, or file2 on v2; first names the field of a
// "key value" file, or "" for a one-number file.
func cgroupValue(t *testing.T, dir, ctl, file1, file2, field string) uint64 {
	t.Helper()
	path := filepath.Join("/sys/fs/cgroup", ctl, dir, file1)
	if cgroups.Mode() == cgroups.Unified {
		path = filepath.Join("/sys/fs/cgroup", dir, file2)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if field == "" && len(f) == 1 || len(f) == 2 && f[0] == field {
			v, err := strconv.ParseUint(f[len(f)-1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("%s: no %q", path, field)
	return 0
}

// netDev reads an interface's rx and tx bytes in process pid's network
// namespace.
func netDev(t *testing.T, pid int, iface string) (rx, tx uint64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/dev", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		name, rest, ok := strings.Cut(l, ":")
		if ok && strings.TrimSpace(name) == iface {
			f := strings.Fields(rest)
			rx, _ = strconv.ParseUint(f[0], 10, 64)
			tx, _ = strconv.ParseUint(f[8], 10, 64)
			return rx, tx
		}
	}
	t.Fatalf("no %s in pid %d's /proc/net/dev", iface, pid)
	return 0, 0
}

func podStats(t *testing.T, p *testenv.Pierd, id string) *runtimeapi.PodSandboxStats {
	t.Helper()
	resp, err := p.Runtime.PodSandboxStats(ctx(t), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: id})
	if err != nil {
		t.Fatalf("PodSandboxStats %s: %v", id, err)
	}
	return resp.Stats
}

// TestPodStats: a pod whose container burns CPU and holds 32 MiB reports
// its cgroup's figures (between two reads of the cgroup's files), its
// CPU rate, its process count, its eth0 counters as /proc/<pid>/net/dev
// has them (growing with traffic sent to its IP), and its container's
// stats; the filters select as ListPodSandbox's do; a host-network pod has
// no network figures, a stopped pod no stats, an unknown id NotFound.
func TestPodStats(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	name := fmt.Sprintf("stats-%d", time.Now().UnixNano()%1e6)
	id, cfg, parent := statsPod(t, p, name, false)
	cid := startContainer(t, p, id, cfg, containerConfig("burn", "sh", "-c",
		`x=$(head -c 33554432 /dev/zero | tr '\0' a); echo ready; while :; do :; done`))
	pid := verbosePid(t, p, cid)
	time.Sleep(2 * time.Second) // the string is made, the loop burns

	cpuBefore := cgroupValue(t, parent, "cpuacct", "cpuacct.usage", "cpu.stat", map[bool]string{true: "usage_usec"}[cgroups.Mode() == cgroups.Unified])
	st := podStats(t, p, id)
	cpuAfter := cgroupValue(t, parent, "cpuacct", "cpuacct.usage", "cpu.stat", map[bool]string{true: "usage_usec"}[cgroups.Mode() == cgroups.Unified])
	if cgroups.Mode() == cgroups.Unified {
		cpuBefore, cpuAfter = cpuBefore*1000, cpuAfter*1000
	}
	if st.Attributes.Id != id || st.Attributes.Metadata.Name != name || st.Attributes.Labels["app"] != name {
		t.Errorf("attributes %v: want pod %s", st.Attributes, id)
	}
	l := st.Linux
	if got := l.Cpu.UsageCoreNanoSeconds.Value; got < cpuBefore || got > cpuAfter || got == 0 {
		t.Errorf("pod CPU %d ns: the cgroup had %d before and %d after", got, cpuBefore, cpuAfter)
	}
	if ws := l.Memory.WorkingSetBytes.Value; ws < 32<<20 {
		t.Errorf("pod working set %d bytes: the container holds 32 MiB", ws)
	}
	if l.Memory.UsageBytes.Value < l.Memory.WorkingSetBytes.Value || l.Memory.RssBytes.Value < 32<<20 || l.Memory.PageFaults.Value == 0 {
		t.Errorf("pod memory %v: usage below working set, or RSS below 32 MiB, or no page faults", l.Memory)
	}
	if n := l.Process.GetProcessCount().GetValue(); n < 1 {
		t.Errorf("pod process count %d: the container's shell runs", n)
	}
	if len(l.Containers) != 1 || l.Containers[0].Attributes.Id != cid || l.Containers[0].Cpu.UsageCoreNanoSeconds.Value == 0 {
		t.Errorf("pod's containers %v: want %s, with its CPU", l.Containers, cid)
	}
	if cgroups.Mode() != cgroups.Unified && (l.Cpu.Psi != nil || l.Io != nil) {
		t.Errorf("PSI on cgroup v1, which has none: %v %v", l.Cpu.Psi, l.Io)
	}

	// The CPU rate, from the previous sample: the loop burns a core
	// (shared with the rest of this 2-core host).
	time.Sleep(time.Second)
	st = podStats(t, p, id)
	if nc := st.Linux.Cpu.GetUsageNanoCores(); nc == nil || nc.Value < 2e8 {
		t.Errorf("pod nanocores %v: a busy loop runs", nc)
	}

	// Network: eth0's counters are /proc/<pid>/net/dev's, and grow with
	// datagrams sent to the pod's IP (half of 100 kB at least: UDP may drop).
	_, info := inspectPod(t, p, id)
	net1 := st.Linux.Network
	if net1 == nil || net1.DefaultInterface.GetName() != "eth0" {
		t.Fatalf("pod network %v: want eth0 as the default interface", net1)
	}
	rx, tx := netDev(t, pid, "eth0")
	if got := net1.DefaultInterface.RxBytes.Value; got > rx {
		t.Errorf("eth0 rx %d bytes: /proc/%d/net/dev has %d since", got, pid, rx)
	}
	if err := testenv.SendUDP(info.IPs[0], 100, 1000); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	st = podStats(t, p, id)
	rx2, tx2 := netDev(t, pid, "eth0")
	d := st.Linux.Network.DefaultInterface
	if d.RxBytes.Value < rx+50*1000 || d.RxBytes.Value > rx2 || d.TxBytes.Value < tx || d.TxBytes.Value > tx2 {
		t.Errorf("eth0 rx %d tx %d bytes after 100 kB sent to the pod: /proc/net/dev had rx %d tx %d before, %d %d after", d.RxBytes.Value, d.TxBytes.Value, rx, tx, rx2, tx2)
	}

	// Filters, as ListPodSandbox's.
	other, _, _ := statsPod(t, p, name+"-hostnet", true)
	list := func(f *runtimeapi.PodSandboxStatsFilter) []string {
		t.Helper()
		resp, err := p.Runtime.ListPodSandboxStats(ctx(t), &runtimeapi.ListPodSandboxStatsRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range resp.Stats {
			ids = append(ids, s.Attributes.Id)
		}
		return ids
	}
	for _, c := range []struct {
		f    *runtimeapi.PodSandboxStatsFilter
		want []string
	}{
		{&runtimeapi.PodSandboxStatsFilter{Id: id}, []string{id}},
		{&runtimeapi.PodSandboxStatsFilter{Id: id[:12]}, []string{id}},
		{&runtimeapi.PodSandboxStatsFilter{LabelSelector: map[string]string{"app": name + "-hostnet"}}, []string{other}},
		{&runtimeapi.PodSandboxStatsFilter{LabelSelector: map[string]string{"app": "none"}}, nil},
	} {
		if got := list(c.f); fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("ListPodSandboxStats %v: %v, want %v", c.f, got, c.want)
		}
	}
	if all := strings.Join(list(nil), " "); !strings.Contains(all, id) || !strings.Contains(all, other) {
		t.Errorf("ListPodSandboxStats: %s, want %s and %s in it", all, id, other)
	}
	if n := podStats(t, p, other).Linux.Network; n != nil {
		t.Errorf("host-network pod's network %v: it has none of its own", n)
	}

	// A stopped pod has no stats; an unknown one is NotFound.
	if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: other}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Runtime.PodSandboxStats(ctx(t), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: other}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("PodSandboxStats of a stopped pod: %v, want FailedPrecondition", err)
	}
	if got := list(&runtimeapi.PodSandboxStatsFilter{Id: other}); got != nil {
		t.Errorf("ListPodSandboxStats lists a stopped pod: %v", got)
	}
	if _, err := p.Runtime.PodSandboxStats(ctx(t), &runtimeapi.PodSandboxStatsRequest{PodSandboxId: "0123456789abcdef"}); status.Code(err) != codes.NotFound {
		t.Errorf("PodSandboxStats of an unknown pod: %v, want NotFound", err)
	}

	// The metrics of the pod and its container.
	mresp, err := p.Runtime.ListPodSandboxMetrics(ctx(t), &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]uint64{}
	for _, pm := range mresp.PodMetrics {
		if pm.PodSandboxId != id {
			continue
		}
		for _, m := range pm.Metrics {
			if m.LabelValues[len(m.LabelValues)-1] == "eth0" {
				found[m.Name] = m.Value.Value
			}
		}
		for _, cm := range pm.ContainerMetrics {
			for _, m := range cm.Metrics {
				found[m.Name] = m.Value.Value
			}
		}
	}
	if found["container_network_receive_bytes_total"] < rx+50*1000 || found["container_memory_working_set_bytes"] < 32<<20 || found["container_processes"] < 1 {
		t.Errorf("metrics of pod %s: %v", id, found)
	}
}

// TestStatsStreams: the Stream* stats RPCs return what the List RPCs do,
// for many pods.
func TestStatsStreams(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	const n = 12
	want := map[string]bool{}
	for i := range n {
		id, cfg, _ := statsPod(t, p, fmt.Sprintf("stream-%d-%d", time.Now().UnixNano()%1e6, i), true)
		startContainer(t, p, id, cfg, containerConfig("sleep", "sleep", "60"))
		want[id] = true
	}
	s, err := p.Runtime.StreamPodSandboxStats(ctx(t), &runtimeapi.StreamPodSandboxStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for {
		resp, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range resp.PodSandboxStats {
			if want[st.Attributes.Id] && len(st.Linux.Containers) == 1 {
				got[st.Attributes.Id] = true
			}
		}
	}
	if len(got) != n {
		t.Errorf("StreamPodSandboxStats: %d of the %d pods, each with its container", len(got), n)
	}
	cs, err := p.Runtime.StreamContainerStats(ctx(t), &runtimeapi.StreamContainerStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	containers := 0
	for {
		resp, err := cs.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		containers += len(resp.ContainerStats)
	}
	if containers < n {
		t.Errorf("StreamContainerStats: %d containers, want at least %d", containers, n)
	}
	ms, err := p.Runtime.StreamPodSandboxMetrics(ctx(t), &runtimeapi.StreamPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	metricPods := 0
	for {
		resp, err := ms.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, pm := range resp.PodSandboxMetrics {
			if want[pm.PodSandboxId] && len(pm.ContainerMetrics) == 1 {
				metricPods++
			}
		}
	}
	if metricPods != n {
		t.Errorf("StreamPodSandboxMetrics: %d of the %d pods, each with its container", metricPods, n)
	}
}
