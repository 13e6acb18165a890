package kubelet

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// resizeUID is the resize pod's fixed uid: kubelet names a static pod by
// a hash of its manifest unless the manifest sets one, so with it a new
// manifest is the same pod, changed, which kubelet may resize in place.
const resizeUID = "8b0f3c52-6d1e-4c8e-9a57-resize000001"

// resizePod is a Burstable pod with limits of CPU 200m and memory 64Mi,
// or, bigger, 400m and 96Mi.
func resizePod(bigger bool) *corev1.Pod {
	c := ctr("resized", idle)
	c.Resources = corev1.ResourceRequirements{
		Requests: resources("cpu", "100m", "memory", "32Mi"),
		Limits:   resources("cpu", "200m", "memory", "64Mi"),
	}
	if bigger {
		c.Resources.Limits = resources("cpu", "400m", "memory", "96Mi")
	}
	p := newPod("resize", c)
	p.UID = types.UID(resizeUID)
	return p
}

// checkResize rewrites the resize pod's manifest with higher limits, then
// with the first ones again, and checks that kubelet resizes it in place
// through pier each time: the container keeps its id and restart count,
// kubelet reports the new limits, and the container's cgroup has them (CFS
// quota, memory limit), as pier's ContainerStatus reports them.
func checkResize(t *testing.T, n *node) {
	p := n.waitPod(t, "resize", 2*time.Minute, running())
	before := status(p, "resized")
	id := containerID(before)
	pids, err := containerPids(id)
	if err != nil || len(pids) == 0 {
		t.Fatalf("the resize pod's container %s has no process: %v", id, err)
	}
	cpuDir, memDir := cgroupDir(t, pids[0], "cpu"), cgroupDir(t, pids[0], "memory")
	quota, memLimit := "cpu.cfs_quota_us", "memory.limit_in_bytes"
	if _, v1 := cgroupMountsByController(t)["memory"]; !v1 {
		quota, memLimit = "cpu.max", "memory.max"
	}
	quotaOf := func(v string) string { // "40000" of v1's "40000" and v2's "40000 100000"
		var q string
		fmt.Sscan(v, &q)
		return q
	}
	if q, m := quotaOf(cgroupValue(cpuDir, quota)), cgroupValue(memDir, memLimit); q != "20000" || m != "67108864" {
		t.Fatalf("before the resize the container's cgroup has quota %s, memory limit %s; want 20000, 67108864", q, m)
	}
	// The process's own cgroup, or the container's above it (crun with the
	// systemd driver keeps the process in a "container" cgroup inside the
	// scope and may apply an update to either).
	has := func(dir, file, want string, value func(string) string) bool {
		return value(cgroupValue(dir, file)) == want || value(cgroupValue(containerCgroup(dir, id), file)) == want
	}
	same := func(v string) string { return v }
	// Up, then down again (a lowered memory limit, above the usage).
	for _, step := range []struct {
		bigger        bool
		milliCPU, mem int64
	}{{true, 400, 96 << 20}, {false, 200, 64 << 20}} {
		if err := n.kubelet.WritePod(resizePod(step.bigger)); err != nil {
			t.Fatal(err)
		}
		p = n.waitPod(t, "resize", 2*time.Minute, func(p *corev1.Pod) error {
			if err := running()(p); err != nil {
				return err
			}
			st := status(p, "resized")
			if r := st.Resources; r == nil || r.Limits.Cpu().MilliValue() != step.milliCPU || r.Limits.Memory().Value() != step.mem {
				return fmt.Errorf("kubelet reports the container's resources %v, want limits cpu %dm, memory %d", st.Resources, step.milliCPU, step.mem)
			}
			return nil
		})
		after := status(p, "resized")
		if containerID(after) != id || after.RestartCount != before.RestartCount {
			t.Errorf("the container was replaced or restarted, not resized in place: id %s, restarts %d; before: id %s, restarts %d",
				containerID(after), after.RestartCount, id, before.RestartCount)
		}
		wantQuota := step.milliCPU * 100 // µs per 100 ms period
		if !has(cpuDir, quota, fmt.Sprint(wantQuota), quotaOf) || !has(memDir, memLimit, fmt.Sprint(step.mem), same) {
			t.Errorf("after the resize the container's cgroup has quota %s, memory limit %s; want %d, %d",
				cgroupValue(cpuDir, quota), cgroupValue(memDir, memLimit), wantQuota, step.mem)
		}
		resp, err := n.pierd.Runtime.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			t.Fatal(err)
		}
		if r := resp.Status.GetResources().GetLinux(); r.GetCpuQuota() != wantQuota || r.GetMemoryLimitInBytes() != step.mem {
			t.Errorf("pier's ContainerStatus reports resources %v, want quota %d and memory limit %d", r, wantQuota, step.mem)
		}
	}
}

// TestKubeletResize: kubelet resizes a static pod in place through pier.
func TestKubeletResize(t *testing.T) {
	parallel(t)
	n := startNode(t, nodeOptions{})
	if err := n.kubelet.WritePod(resizePod(false)); err != nil {
		t.Fatal(err)
	}
	checkResize(t, n)
}
