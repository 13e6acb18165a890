package e2e

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// TestChaosReboot crashes the node under pier: pierd, every shim monitor
// and every container process end with SIGKILL (a power cut, not a
// shutdown), and the volatile state directory (pier's /run) is unmounted
// and wiped while the persistent root stays. The restarted pierd reports
// the containers that ran or were created exited with status unknown (255),
// keeps the exit code of one that had exited, reports the pods not ready,
// holds nothing half-mounted; new pods work, and the old ones stop and go
// cleanly, leaving the node as it was.
func TestChaosReboot(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	// The bridge and its chains are made once; a reboot would take them
	// too, but the node's network outlives this test's pierd.
	warm := runPod(t, p, podConfig("reboot-warmup"))
	if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: warm}); err != nil {
		t.Fatal(err)
	}
	before := snapshotNode(t, p)

	podA, cfgA := podWithLogs(t, p, "reboot-a")
	running := startContainer(t, p, podA, cfgA, containerConfig("running", "sleep", "1000"))
	exited := startContainer(t, p, podA, cfgA, containerConfig("exited", "sh", "-c", "exit 3"))
	created := createContainer(t, p, podA, cfgA, containerConfig("created", "sleep", "1000"))
	podB, cfgB := podWithLogs(t, p, "reboot-b")
	runningB := startContainer(t, p, podB, cfgB, containerConfig("running", "sleep", "1000"))
	if st := waitState(t, p, exited, runtimeapi.ContainerState_CONTAINER_EXITED); st.ExitCode != 3 {
		t.Fatalf("exit 3 reported as %d", st.ExitCode)
	}
	for _, id := range []string{running, runningB} {
		waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	}
	// Every process of the containers (the created one's is the runtime's
	// init, waiting to exec), and the monitors.
	var victims []int
	for _, id := range []string{running, exited, created, runningB} {
		victims = append(victims, cgroupProcs(id)...)
	}
	if len(victims) != 3 {
		t.Fatalf("%d processes in the containers' cgroups, want 3: %v", len(victims), victims)
	}
	for pid := range snapshotNode(t, p).monitors {
		victims = append(victims, pid)
	}

	// The power cut.
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			p.Start() // the test's cleanup needs a pierd
		}
	})
	for _, pid := range victims {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for deadline := time.Now().Add(10 * time.Second); slices.ContainsFunc(victims, alive); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("processes outlive SIGKILL by 10 s")
		}
	}

	// The boot: a new /run, new cgroup hierarchies, new iptables.
	state := filepath.Join(p.Dir, "state")
	mounts := slices.Collect(maps.Keys(snapshotNode(t, p).mounts))
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) }) // deepest first
	for _, m := range mounts {
		if strings.HasPrefix(m, state+"/") {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
				t.Fatalf("unmount %s: %v", m, err)
			}
		}
	}
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	network.RemovePodRules()
	for _, id := range []string{running, exited, created, runningB} {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/pier-e2e/" + id)
		for _, d := range dirs {
			os.Remove(d)
		}
	}
	restarted = true
	start := time.Now()
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("pierd started after the reboot in %v", time.Since(start).Round(time.Millisecond))

	for _, id := range []string{running, created, runningB} {
		st := containerStatus(t, p, id)
		if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 255 || st.Reason != "Unknown" {
			t.Errorf("container %s (%s) after the reboot: %v, exit %d, %q: %s", id, st.Metadata.Name, st.State, st.ExitCode, st.Reason, st.Message)
		}
	}
	if st := containerStatus(t, p, exited); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 3 {
		t.Errorf("the container that had exited 3, after the reboot: %v, exit %d, %q", st.State, st.ExitCode, st.Reason)
	}
	for _, id := range []string{podA, podB} {
		if st, _ := inspectPod(t, p, id); st.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
			t.Errorf("pod %s after the reboot: %v", id, st.State)
		}
	}
	if now := snapshotNode(t, p); len(now.mounts) != 0 || len(now.monitors) != 0 || len(now.others) != 0 {
		t.Errorf("after the reboot, before any call: %s", now)
	}

	// New pods work.
	podC, cfgC := podWithLogs(t, p, "reboot-c")
	fresh := startContainer(t, p, podC, cfgC, containerConfig("fresh", "sleep", "1000"))
	waitState(t, p, fresh, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if out := execOut(t, p, fresh, "echo", "up"); strings.TrimSpace(out) != "up" {
		t.Errorf("exec in a new pod after the reboot: %q", out)
	}
	if st, info := inspectPod(t, p, podC); st.State != runtimeapi.PodSandboxState_SANDBOX_READY || len(info.IPs) == 0 {
		t.Errorf("new pod after the reboot: %v, IPs %v", st.State, info.IPs)
	}

	// The old pods, and the new one, go cleanly.
	for _, id := range []string{podA, podB, podC} {
		if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Errorf("stop pod %s: %v", id, err)
		}
		if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			t.Errorf("remove pod %s: %v", id, err)
		}
	}
	if cs := listContainers(t, p); len(cs) != 0 {
		t.Errorf("%d containers left after their pods were removed", len(cs))
	}
	waitSame(t, p, before)
}

// waitSame waits a few seconds for the node to hold what it held before
// (the kernel frees a network namespace, and its veth, in the background),
// then asserts it.
func waitSame(t *testing.T, p *testenv.Pierd, before *nodeObjects) {
	t.Helper()
	waitTransientShims(t, p)
	now := snapshotNode(t, p)
	for deadline := time.Now().Add(10 * time.Second); len(now.veths) != len(before.veths) && time.Now().Before(deadline); now = snapshotNode(t, p) {
		time.Sleep(50 * time.Millisecond)
	}
	before.assertSame(t, now)
}

// cgroupProcs lists the processes in a container's cgroups under the
// test's parent, in any hierarchy.
func cgroupProcs(id string) []int {
	files, _ := filepath.Glob("/sys/fs/cgroup/*/pier-e2e/" + id + "/cgroup.procs")
	var pids []int
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, field := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(field); err == nil && !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}
