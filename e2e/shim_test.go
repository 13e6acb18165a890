package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// shimPid is the pid of a container's shim, from its verbose status.
func shimPid(t *testing.T, p *testenv.Pierd, id string) int {
	t.Helper()
	resp, err := p.Runtime.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ ShimPid int }
	json.Unmarshal([]byte(resp.Info["info"]), &info)
	if info.ShimPid <= 0 {
		t.Fatalf("container %s: no shim pid in %q", id, resp.Info["info"])
	}
	return info.ShimPid
}

// TestShimUnresponsiveAtRestart: a shim that does not answer when pierd
// starts (here stopped with SIGSTOP) leaves its container Unknown, and
// StopContainer still stops it, through the runtime; once the shim
// answers again, pierd follows it and records the real exit.
func TestShimUnresponsiveAtRestart(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "unresponsive")
	id := startContainer(t, p, podID, pod, containerConfig("sleeper", "sleep", "1000"))
	waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	shim, init := shimPid(t, p, id), containerPid(t, p, id)

	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(shim, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	t.Cleanup(func() {
		if stopped {
			syscall.Kill(shim, syscall.SIGCONT)
		}
	})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if st := containerStatus(t, p, id); st.State != runtimeapi.ContainerState_CONTAINER_UNKNOWN || !strings.Contains(st.Message, "does not answer") {
		t.Fatalf("container with a stopped shim after the restart: %v %q %q", st.State, st.Reason, st.Message)
	}
	begin := time.Now()
	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 2}); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	t.Logf("stopped in %v without the shim", time.Since(begin))
	if alive(init) {
		t.Fatalf("StopContainer returned, and the container's init %d still runs", init)
	}

	// The shim answers again: the exit it records is the container's.
	syscall.Kill(shim, syscall.SIGCONT)
	stopped = false
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := containerStatus(t, p, id)
		if st.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			if st.ExitCode != 137 {
				t.Errorf("exit code %d (%q), want 137", st.ExitCode, st.Reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the shim answers again, the container is %v %q", st.State, st.Message)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if !ended(shim, 5*time.Second) {
		t.Error("the shim outlives RemoveContainer by 5 s")
	}
}

// TestShimDiesDuringStop: a shim killed while StopContainer waits out the
// grace period must not make Stop report success with the container
// still running: pierd stops it through the runtime.
func TestShimDiesDuringStop(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "shimdies")
	id := startContainer(t, p, podID, pod, containerConfig("stubborn", "sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"))
	waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	shim, init := shimPid(t, p, id), containerPid(t, p, id)
	stopped := make(chan error, 1)
	go func() {
		_, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 20})
		stopped <- err
	}()
	time.Sleep(500 * time.Millisecond) // Stop waits out the grace period
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("StopContainer: %v", err)
		}
		if !ended(init, 5*time.Second) {
			t.Fatalf("StopContainer returned, and the container's init %d still runs", init)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("StopContainer did not return 15 s after the shim died")
	}
	if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentStart: two StartContainer calls at once start the
// container once; the other is refused, and the container runs on.
func TestConcurrentStart(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "twostarts")
	for i := range 5 {
		id := createContainer(t, p, podID, pod, containerConfig("twice"+string(rune('a'+i)), "sleep", "1000"))
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				_, err := p.Runtime.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: id})
				errs <- err
			}()
		}
		failed := 0
		for range 2 {
			if err := <-errs; err != nil {
				failed++
				if status.Code(err) != codes.FailedPrecondition {
					t.Errorf("the other start: %v, want FailedPrecondition", err)
				}
			}
		}
		if failed != 1 {
			t.Errorf("round %d: %d of 2 starts failed, want 1", i, failed)
		}
		time.Sleep(100 * time.Millisecond)
		if st := containerStatus(t, p, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Fatalf("round %d: after two starts the container is %v %q %q", i, st.State, st.Reason, st.Message)
		}
	}
}

// upgradeFrom is the last commit whose monitor ran the runtime's start,
// kill and delete itself: shims it started must still be found and driven
// after an upgrade.
const upgradeFrom = "36e7eb7"

// TestUpgradeFromMonitorThatRanTheRuntime starts containers with pier as
// of upgradeFrom, replaces its binaries with this tree's (as a package
// upgrade does, running shims untouched), restarts pierd, and drives the
// old shims: status, exec, attach-free start of a created container, stop,
// remove.
func TestUpgradeFromMonitorThatRanTheRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the previous pier")
	}
	if err := exec.Command("git", "-C", "..", "cat-file", "-e", upgradeFrom+"^{commit}").Run(); err != nil {
		t.Skipf("commit %s is not in this clone's history (a shallow clone): cannot build the previous pier", upgradeFrom)
	}
	src, install := t.TempDir(), t.TempDir()
	archive := exec.Command("sh", "-c", "git -C .. archive "+upgradeFrom+" | tar -x -C "+src)
	if out, err := archive.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out, err := exec.Command("make", "-s", "-C", src, "build", "VERSION=old").CombinedOutput(); err != nil {
		t.Fatalf("build pier %s: %v: %s", upgradeFrom, err, out)
	}
	bins := []string{"pierd", "pier-shim", "pier-shim-monitor"}
	for _, b := range bins {
		if err := copyExecutable(filepath.Join(src, "bin", b), filepath.Join(install, b)); err != nil {
			t.Fatal(err)
		}
	}
	config := network.Config()
	dir := t.TempDir()
	p, err := testenv.StartPierd(testenv.PierdOptions{Binary: filepath.Join(install, "pierd"), Dir: dir, Config: config})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.RemovePods(); err != nil {
			t.Errorf("remove the test's pods: %v", err)
		}
		p.Stop()
		if t.Failed() {
			t.Logf("pierd log:\n%s", p.LogText())
		}
	})
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "upgrade")
	running := startContainer(t, p, podID, pod, containerConfig("running", "sh", "-c", "trap 'exit 7' TERM; while true; do sleep 0.1; done"))
	created := createContainer(t, p, podID, pod, containerConfig("created", "sleep", "1000"))
	waitState(t, p, running, runtimeapi.ContainerState_CONTAINER_RUNNING)
	oldShim := shimPid(t, p, running)
	// The create runs in the background: wait for its monitor.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if out, _ := exec.Command("pgrep", "-f", "^pier-shim monitor id="+created).Output(); len(out) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the created container's shim never became its monitor")
		}
	}

	// The upgrade: new binaries in place, pierd restarted; shims run on.
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, b := range bins {
		if err := copyExecutable(filepath.Join(filepath.Dir(pierdBin), b), filepath.Join(install, b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if st := containerStatus(t, p, running); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("running container after the upgrade: %v %q", st.State, st.Message)
	}
	if shimPid(t, p, running) != oldShim || !alive(oldShim) {
		t.Fatal("the old shim was replaced")
	}
	// The old monitor hands an exec to the new pier-shim.
	r, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: running, Cmd: []string{"echo", "hi"}, Timeout: 10})
	if err != nil || string(r.Stdout) != "hi\n" || r.ExitCode != 0 {
		t.Errorf("exec through the old shim: %v %+v", err, r)
	}
	// A container the old pier created, started by the new one.
	if _, err := p.Runtime.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: created}); err != nil {
		t.Fatalf("StartContainer of a container the old pier created: %v", err)
	}
	waitState(t, p, created, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if r, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: created, Cmd: []string{"true"}, Timeout: 10}); err != nil || r.ExitCode != 0 {
		t.Errorf("exec in the container started after the upgrade: %v %+v", err, r)
	}
	// Stop signals through the runtime; the old monitor records the exit.
	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: running, Timeout: 10}); err != nil {
		t.Fatal(err)
	}
	if st := containerStatus(t, p, running); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 7 {
		t.Errorf("stopped container: %v %d, want exited 7 (its TERM trap)", st.State, st.ExitCode)
	}
	for _, id := range []string{running, created} {
		if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if !ended(oldShim, 5*time.Second) {
		t.Error("the old shim outlives RemoveContainer by 5 s")
	}
	if out, _ := exec.Command("pgrep", "-f", "id="+created).Output(); len(out) > 0 {
		t.Errorf("a shim of the removed container runs: %s", out)
	}
}

// ended waits up to d for process pid to end (it answers, then exits).
func ended(pid int, d time.Duration) bool {
	for deadline := time.Now().Add(d); alive(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// copyExecutable puts a copy of src at dst by renaming a temporary file
// into place, as package managers do: a running binary is never written.
func copyExecutable(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, b, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
