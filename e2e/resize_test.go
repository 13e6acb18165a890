package e2e

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// readLimits reads a container's memory limit and CPU quota and shares
// from inside it (its own cgroup, on any layout and driver), as
// "memory <bytes> quota <µs> shares <n>" (v2: the weight stands for the
// shares).
func readLimits(t *testing.T, p *testenv.Pierd, id string) string {
	t.Helper()
	const read = `m=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max)
q=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max)
s=$(cat /sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || cat /sys/fs/cgroup/cpu.weight)
echo memory $m quota $q shares $s`
	resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", read}, Timeout: 30})
	if err != nil {
		t.Fatalf("read the limits of %s: %v", id, err)
	}
	return strings.TrimSpace(string(resp.Stdout))
}

// wantLimits fails unless the container's cgroup has this memory limit and
// CPU quota (and, on cgroup v1, shares).
func wantLimits(t *testing.T, p *testenv.Pierd, id string, memory, quota, shares int64) {
	t.Helper()
	got := readLimits(t, p, id)
	f := strings.Fields(got)
	if len(f) != 6 || f[1] != itoa(memory) || f[3] != itoa(quota) || !cgroup2() && f[5] != itoa(shares) {
		t.Errorf("container %s's cgroup: %q; want memory %d quota %d shares %d", id, got, memory, quota, shares)
	}
}

// cgroup2 reports whether the node's cgroups are v2 alone.
func cgroup2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func updateResources(t *testing.T, p *testenv.Pierd, id string, r *runtimeapi.LinuxContainerResources) error {
	t.Helper()
	_, err := p.Runtime.UpdateContainerResources(ctx(t), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: r})
	return err
}

// wantStatusResources fails unless ContainerStatus reports these limits.
func wantStatusResources(t *testing.T, p *testenv.Pierd, id string, memory, quota, shares int64) {
	t.Helper()
	r := containerStatus(t, p, id).GetResources().GetLinux()
	if r.GetMemoryLimitInBytes() != memory || r.GetCpuQuota() != quota || r.GetCpuShares() != shares {
		t.Errorf("ContainerStatus of %s reports resources %v; want memory %d quota %d shares %d", id, r, memory, quota, shares)
	}
}

// TestUpdateContainerResources, with runc and with crun: a running
// container's new limits show in its cgroup and in ContainerStatus, and
// survive a pierd restart; a created container has them once started;
// bad input, an unknown or exited container and a memory limit below the
// container's usage are refused, each with its code, and change nothing.
func TestUpdateContainerResources(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	initial := &runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20}
	withLimits := func(cfg *runtimeapi.ContainerConfig) *runtimeapi.ContainerConfig {
		cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: initial}
		return cfg
	}
	type handlerPod struct {
		handler, id string
		cfg         *runtimeapi.PodSandboxConfig
		running     string
	}
	var pods []*handlerPod
	for _, handler := range []string{"runc", "crun"} {
		hp := &handlerPod{handler: handler, cfg: podConfig("resize-" + handler)}
		hp.cfg.LogDirectory = t.TempDir()
		resp, err := p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: hp.cfg, RuntimeHandler: handler})
		if status.Code(err) == codes.FailedPrecondition && handler != "runc" {
			t.Logf("not checked with %s, which cannot run here: %v", handler, err) // crun on cgroup v1 hybrid
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		hp.id = resp.PodSandboxId
		pods = append(pods, hp)
		t.Run(handler, func(t *testing.T) {
			id := startContainer(t, p, hp.id, hp.cfg, withLimits(containerConfig("running", "sleep", "1000")))
			hp.running = id
			wantLimits(t, p, id, 64<<20, 50000, 512)
			if err := updateResources(t, p, id, &runtimeapi.LinuxContainerResources{CpuShares: 1024, CpuQuota: 150000, CpuPeriod: 100000, MemoryLimitInBytes: 128 << 20}); err != nil {
				t.Fatalf("UpdateContainerResources: %v", err)
			}
			wantLimits(t, p, id, 128<<20, 150000, 1024)
			wantStatusResources(t, p, id, 128<<20, 150000, 1024)

			// A field left 0 keeps its value.
			if err := updateResources(t, p, id, &runtimeapi.LinuxContainerResources{CpuQuota: 120000}); err != nil {
				t.Fatalf("UpdateContainerResources of the quota alone: %v", err)
			}
			wantLimits(t, p, id, 128<<20, 120000, 1024)
			wantStatusResources(t, p, id, 128<<20, 120000, 1024)

			// Cpusets, where the container's cgroup has the controller.
			if err := updateResources(t, p, id, &runtimeapi.LinuxContainerResources{CpusetCpus: "0"}); err != nil {
				t.Fatalf("UpdateContainerResources of the cpuset: %v", err)
			}
			r, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "cat /sys/fs/cgroup/cpuset/cpuset.cpus 2>/dev/null || cat /sys/fs/cgroup/cpuset.cpus 2>/dev/null || echo none"}, Timeout: 10})
			if got := strings.TrimSpace(string(r.GetStdout())); err != nil || got != "0" && got != "none" {
				t.Errorf("the container's cpuset after the update: %q %v, want 0", got, err)
			}
			if got := containerStatus(t, p, id).GetResources().GetLinux().GetCpusetCpus(); got != "0" {
				t.Errorf("ContainerStatus reports cpuset %q, want 0", got)
			}

			// Created, then updated, then started: the new limits hold.
			created := createContainer(t, p, hp.id, hp.cfg, withLimits(containerConfig("created", "sleep", "1000")))
			if err := updateResources(t, p, created, &runtimeapi.LinuxContainerResources{CpuQuota: 200000, MemoryLimitInBytes: 100 << 20}); err != nil {
				t.Fatalf("UpdateContainerResources of a created container: %v", err)
			}
			if _, err := p.Runtime.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: created}); err != nil {
				t.Fatal(err)
			}
			wantLimits(t, p, created, 100<<20, 200000, 512)
			wantStatusResources(t, p, created, 100<<20, 200000, 512)

			// A memory limit below the container's usage: 40 MiB of shared
			// memory, which nothing can reclaim without swap.
			hog := startContainer(t, p, hp.id, hp.cfg, withLimits(containerConfig("hog", "sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 && touch /filled && sleep 1000")))
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				r, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: hog, Cmd: []string{"test", "-e", "/filled"}, Timeout: 10})
				if err == nil && r.ExitCode == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the hog did not fill its memory: %v", err)
				}
			}
			err = updateResources(t, p, hog, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 16 << 20})
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "uses") {
				t.Errorf("a memory limit below usage: %v; want FailedPrecondition saying what the container uses", err)
			}
			wantLimits(t, p, hog, 64<<20, 50000, 512)
			wantStatusResources(t, p, hog, 64<<20, 50000, 512)

			// An exited container.
			exited := startContainer(t, p, hp.id, hp.cfg, containerConfig("exited", "true"))
			for deadline := time.Now().Add(30 * time.Second); containerStatus(t, p, exited).State != runtimeapi.ContainerState_CONTAINER_EXITED; time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the container did not exit")
				}
			}
			if err := updateResources(t, p, exited, &runtimeapi.LinuxContainerResources{CpuQuota: 100000}); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("updating an exited container: %v; want FailedPrecondition", err)
			}
		})
	}

	id := pods[0].running
	for _, bad := range []struct {
		name string
		r    *runtimeapi.LinuxContainerResources
	}{
		{"negative memory", &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: -5}},
		{"negative shares", &runtimeapi.LinuxContainerResources{CpuShares: -1}},
		{"quota below the kernel's 1 ms", &runtimeapi.LinuxContainerResources{CpuQuota: 5}},
		{"period of an hour", &runtimeapi.LinuxContainerResources{CpuPeriod: 3600_000_000}},
		{"cpuset", &runtimeapi.LinuxContainerResources{CpusetCpus: "0-x"}},
		{"unified path", &runtimeapi.LinuxContainerResources{Unified: map[string]string{"../../memory.max": "1"}}},
		{"swap below memory", &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20, MemorySwapLimitInBytes: 64 << 20}},
		{"hugepage size", &runtimeapi.LinuxContainerResources{HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2XB"}}}},
	} {
		if err := updateResources(t, p, id, bad.r); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v; want InvalidArgument", bad.name, err)
		}
	}
	if !cgroup2() {
		if err := updateResources(t, p, id, &runtimeapi.LinuxContainerResources{Unified: map[string]string{"memory.high": "max"}}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("unified keys on a node with cgroup v1: %v; want InvalidArgument", err)
		}
	}
	if _, err := p.Runtime.UpdateContainerResources(ctx(t), &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("no linux resources: %v; want InvalidArgument", err)
	}
	if err := updateResources(t, p, "0123456789abcdef", &runtimeapi.LinuxContainerResources{CpuQuota: 100000}); status.Code(err) != codes.NotFound {
		t.Errorf("an unknown container: %v; want NotFound", err)
	}
	wantLimits(t, p, id, 128<<20, 120000, 1024)

	// The recorded limits survive a pierd restart, and updates go on.
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	for _, hp := range pods {
		wantStatusResources(t, p, hp.running, 128<<20, 120000, 1024)
		if err := updateResources(t, p, hp.running, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 96 << 20}); err != nil {
			t.Fatalf("%s: UpdateContainerResources after a restart: %v", hp.handler, err)
		}
		wantLimits(t, p, hp.running, 96<<20, 120000, 1024)
	}
}

// TestUpdatePodSandboxResources: the pod's announced resources are
// recorded (a verbose status shows them, also after a pierd restart), for
// a stopped pod too; bad values and unknown pods are refused.
func TestUpdatePodSandboxResources(t *testing.T) {
	p := startPierd(t, "")
	id := runPod(t, p, podConfig("podresize"))
	update := func(id string, res *runtimeapi.LinuxContainerResources) error {
		_, err := p.Runtime.UpdatePodSandboxResources(ctx(t), &runtimeapi.UpdatePodSandboxResourcesRequest{
			PodSandboxId: id, Resources: res, Overhead: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1 << 20},
		})
		return err
	}
	info := func() string {
		resp, err := p.Runtime.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
		if err != nil {
			t.Fatal(err)
		}
		return resp.Info["info"]
	}
	if err := update(id, &runtimeapi.LinuxContainerResources{CpuShares: 2048, CpuQuota: 300000, CpuPeriod: 100000, MemoryLimitInBytes: 256 << 20}); err != nil {
		t.Fatal(err)
	}
	if got := info(); !strings.Contains(got, `"cpuQuota":"300000"`) || !strings.Contains(got, `"memoryLimitInBytes":"268435456"`) || !strings.Contains(got, `"memoryLimitInBytes":"1048576"`) {
		t.Errorf("the pod's verbose status lacks the resources:\n%s", got)
	}
	if err := update(id, &runtimeapi.LinuxContainerResources{CpuQuota: -7}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a negative quota: %v; want InvalidArgument", err)
	}
	if err := update("0123456789abcdef", &runtimeapi.LinuxContainerResources{CpuQuota: 100000}); status.Code(err) != codes.NotFound {
		t.Errorf("an unknown pod: %v; want NotFound", err)
	}
	if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	if err := update(id, &runtimeapi.LinuxContainerResources{CpuQuota: 400000}); err != nil {
		t.Errorf("a stopped pod: %v; want it recorded, as containerd and CRI-O do", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if got := info(); !strings.Contains(got, `"cpuQuota":"400000"`) {
		t.Errorf("after a restart, the pod's verbose status lacks the resources:\n%s", got)
	}
}
