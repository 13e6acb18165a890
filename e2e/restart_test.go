package e2e

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// bigImage pushes the ~200 MB benchmark image to a registry of its own.
func bigImage(t *testing.T) *testenv.Registry {
	t.Helper()
	img, err := testenv.Big(testenv.BigCacheDir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := r.Push("bench/big:1", img); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestKilledDuringPull kills pierd while it unpacks layers: the half
// layers are never used, the next start removes them, and the next pull
// completes the image. Progress is logged while the pull runs.
func TestKilledDuringPull(t *testing.T) {
	r := bigImage(t)
	p := startPierd(t, "[image]\nprogress_interval = \"20ms\"\nmax_concurrent_downloads = 2\n")
	ref := r.Ref("bench/big:1")
	layers := filepath.Join(p.Root(), "layers")
	go p.Images.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	deadline := time.Now().Add(30 * time.Second)
	for !hasTemp(layers) {
		if time.Now().After(deadline) {
			t.Fatal("no layer was being unpacked")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if !hasTemp(layers) {
		t.Fatal("the killed pull left no partial layer: the test proves nothing")
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if hasTemp(layers) {
		t.Fatal("partial layers survived a restart")
	}
	if s := imageStatus(t, p, ref); s.Image != nil {
		t.Fatalf("an interrupted pull recorded the image: %v", s.Image)
	}
	mustPull(t, p, ref)
	dirs := layerDirs(t, p, ref)
	if len(dirs) != 5 {
		t.Fatalf("%d layers, want 5", len(dirs))
	}
	for i, d := range dirs[1:] {
		files, err := filepath.Glob(filepath.Join(d, "data", "*", "*"))
		if err != nil || len(files) != 10 {
			t.Fatalf("layer %d: %d files (%v), want 10", i+1, len(files), err)
		}
		for _, f := range files {
			if fi, err := os.Stat(f); err != nil || fi.Size() != 5<<20 {
				t.Fatalf("%s: %v %v", f, fi, err)
			}
		}
	}
	if !strings.Contains(p.LogText(), `"Pulling image" image="`+ref+`" progress=`) {
		t.Error("no progress was logged")
	}
}

func hasTemp(dir string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			return true
		}
	}
	return false
}

// TestKillPierdDuringChurn kills pierd at random moments while clients run,
// fill and remove pods, restarting it each time. Afterwards every pod and
// container it lists can be removed, and the node holds nothing of them:
// no veth, IP allocation, iptables rule, mount, cgroup or shim.
func TestKillPierdDuringChurn(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	runPod(t, p, podConfig("warmup")) // the bridge and iptables chains are made once
	before, initsBefore := hostState(t), podInits()
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	for round := range 6 {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if churnOnce(p, fmt.Sprintf("churn-%d-%d-%d", round, w, i)) != nil {
						time.Sleep(10 * time.Millisecond)
					}
				}
			})
		}
		time.Sleep(time.Duration(50+rng.IntN(500)) * time.Millisecond)
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		close(stop)
		wg.Wait()
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
	}
	pods, err := p.Runtime.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range pods.Items {
		if pod.Metadata.Name == "warmup" {
			continue
		}
		if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.Id}); err != nil {
			t.Errorf("stop pod %s (%s): %v", pod.Id, pod.State, err)
		}
		if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.Id}); err != nil {
			t.Errorf("remove pod %s: %v", pod.Id, err)
		}
	}
	cs, err := p.Runtime.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
	if err != nil || len(cs.Containers) != 0 {
		t.Errorf("containers left after their pods were removed: %v %v", cs, err)
	}
	// A shim whose pierd was killed while it ran the runtime's create
	// finds the handshake pipe broken, deletes the container and exits.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := exec.Command("pgrep", "-af", "pier-shim serve "+p.Dir).Output()
		if len(out) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("shims left: %s", out)
			break
		}
	}
	if after := hostState(t); !maps.Equal(before, after) {
		out, _ := exec.Command("iptables-save").Output()
		t.Errorf("node state before the churn %v, after %v; iptables now:\n%s", before, after, out)
	}
	if n := podInits(); n != initsBefore {
		t.Errorf("%d pod init processes before the churn, %d after", initsBefore, n)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if n := strings.Count(string(mounts), p.Root()); n != 0 {
		t.Errorf("%d mounts left under %s", n, p.Root())
	}
	// (A pattern ending in "/" matches nothing: directories are picked.)
	matches, _ := filepath.Glob("/sys/fs/cgroup/*/pier-e2e/*")
	var cg []string
	for _, m := range matches {
		if fi, err := os.Stat(m); err == nil && fi.IsDir() {
			cg = append(cg, m)
		}
	}
	if len(cg) != 0 {
		t.Errorf("cgroups left: %v", cg)
	}
}

// podInits counts the pod init processes of this test binary's pier-shim.
func podInits() int {
	out, _ := exec.Command("pgrep", "-f", filepath.Join(filepath.Dir(pierdBin), "pier-shim")+" pod-init").Output()
	return strings.Count(string(out), "\n")
}

// churnOnce runs a pod with a container in it, and removes it.
func churnOnce(p *testenv.Pierd, name string) error {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := podConfig(name)
	pod, err := p.Runtime.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return err
	}
	ccfg := containerConfig("sleeper", "sleep", "100")
	ccfg.LogPath = ""
	ctr, err := p.Runtime.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, Config: ccfg, SandboxConfig: cfg})
	if err != nil {
		return err
	}
	if _, err := p.Runtime.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		return err
	}
	if _, err := p.Runtime.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.PodSandboxId}); err != nil {
		return err
	}
	_, err = p.Runtime.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.PodSandboxId})
	return err
}

// TestNodeReboot does to pier what a node shutdown and boot do: pierd
// stops (its unit kills only pierd), every process left gets SIGTERM (the
// shims must end at once, taking their containers with them, or the
// shutdown waits for its stop timeout), and /run, pier's volatile state,
// is gone at boot. The restarted pierd reports the containers exited with
// an unknown status and the pod not ready, and removing them leaves
// nothing behind.
func TestNodeReboot(t *testing.T) {
	before := hostState(t)
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "reboot")
	running := startContainer(t, p, podID, pod, containerConfig("running", "sleep", "1000"))
	created := createContainer(t, p, podID, pod, containerConfig("created", "sleep", "1000"))
	waitState(t, p, running, runtimeapi.ContainerState_CONTAINER_RUNNING)
	initPid := containerPid(t, p, running)
	// The created container's shim runs the runtime's create, then
	// becomes its monitor.
	var shims []int
	for deadline := time.Now().Add(10 * time.Second); len(shims) != 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d container monitors of this pierd, want 2", len(shims))
		}
		out, _ := exec.Command("pgrep", "-f", "^pier-shim monitor id=").Output()
		shims = nil
		for _, f := range strings.Fields(string(out)) {
			var pid int
			fmt.Sscan(f, &pid)
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(b), p.Dir) {
				shims = append(shims, pid)
			}
		}
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	// Whatever fails below, the test's cleanup needs a pierd.
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			p.Start()
		}
	})

	// The shutdown's SIGTERM to what is left of pier.
	start := time.Now()
	for _, pid := range shims {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	for _, pid := range append(shims, initPid) {
		for alive(pid) {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("process %d outlives the shutdown's SIGTERM by 5 s", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("shims and containers gone %v after SIGTERM", time.Since(start))

	// Boot: /run is a new tmpfs.
	state := filepath.Join(p.Dir, "state")
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	var under []string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], state+"/") {
			under = append(under, f[4])
		}
	}
	slices.SortFunc(under, func(a, b string) int { return len(b) - len(a) })
	for _, m := range under {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
	if err := os.RemoveAll(state); err != nil {
		t.Fatal(err)
	}
	network.RemovePodRules() // the kernel's tables are new, too, and its cgroups
	for _, id := range []string{running, created} {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/pier-e2e/" + id)
		for _, d := range append(dirs, "/sys/fs/cgroup/pier-e2e/"+id) {
			os.Remove(d)
		}
	}
	restarted = true
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{running, created} {
		st := containerStatus(t, p, id)
		if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 255 || st.Reason != "Unknown" || !strings.Contains(st.Message, "restarted") {
			t.Errorf("container %s after the reboot: %v %d %q %q", id, st.State, st.ExitCode, st.Reason, st.Message)
		}
	}
	ps, err := p.Runtime.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil || ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Errorf("pod after the reboot: %v %v", ps, err)
	}
	if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if after := hostState(t); !maps.Equal(before, after) {
		t.Errorf("node state before %v, after %v", before, after)
	}
}

// containerPid is the host pid of a running container's init: its shim's
// child.
func containerPid(t *testing.T, p *testenv.Pierd, id string) int {
	t.Helper()
	shim := shimPid(t, p, id)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", shim, shim))
	var pid int
	if _, serr := fmt.Sscan(string(b), &pid); err != nil || serr != nil {
		t.Fatalf("container %s: no child of its shim %d: %v %v", id, shim, err, serr)
	}
	return pid
}

// alive says whether process pid runs: it exists and is no zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(after, "Z")
}
