package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// chaosSeeds are the seeds TestChaosKillPierd runs: PIER_CHAOS_SEED=<n>
// runs that one, PIER_CHAOS_SEEDS=<n> sets how many random ones (10 by
// default, as in CI; 50 for a nightly-sized run).
func chaosSeeds(t *testing.T) []uint64 {
	t.Helper()
	if s := os.Getenv("PIER_CHAOS_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("PIER_CHAOS_SEED=%q: %v", s, err)
		}
		return []uint64{seed}
	}
	n := 10
	if s := os.Getenv("PIER_CHAOS_SEEDS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("PIER_CHAOS_SEEDS=%q: want a positive number", s)
		}
	}
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = rand.Uint64() >> 1 // positive as an int64, for the shell
	}
	return seeds
}

// chaosWorkers is how many clients run pods at once while pierd is killed.
const chaosWorkers = 20

// chaosPod is what one client asked for and what pierd answered it.
type chaosPod struct {
	cfg        *runtimeapi.PodSandboxConfig
	last       int // the last step of its plan (see runChaosPod)
	id         string
	ctrs       []*chaosCtr
	stopSent   bool // StopPodSandbox was sent (answered or not)
	removeSent bool // RemovePodSandbox was sent
	removed    bool // RemovePodSandbox answered OK
	failed     string
}

type chaosCtr struct {
	name    string
	id      string // CreateContainer answered
	started bool   // StartContainer answered OK
	exit    int32  // what it exits with on its own; -1: it runs until stopped
}

// TestChaosKillPierd kills pierd with SIGKILL at a random moment while 20
// clients run, fill, stop and remove pods and pull an image, restarts it
// on the same root and checks, for each seed: every pod and container is
// listed in a consistent state or gone, the node holds nothing that no
// listed object owns, no exit code is lost or invented, and a retried
// RunPodSandbox gets the listed sandbox. Then it removes everything and
// checks that the node is as before. Each seed is logged; PIER_CHAOS_SEED
// runs one again.
func TestChaosKillPierd(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	// The bridge and its iptables chains are made once, by the first pod.
	warm := runPod(t, p, podConfig("chaos-warmup"))
	baseline := snapshotNode(t, p)
	var stats chaosStats
	start := time.Now()
	for i, seed := range chaosSeeds(t) {
		ok := t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Logf("seed %d (PIER_CHAOS_SEED=%d reproduces it)", seed, seed)
			chaosRound(t, p, seed, i, warm, baseline, &stats)
		})
		if !ok {
			break // a failed round leaves what the next one would report again
		}
	}
	strays := strings.Count(p.LogText(), "Killing a CNI plugin left running")
	t.Logf("chaos: %d seeds, %d pierd SIGKILLs with %d requests in flight, %d pods and %d containers checked after restarts, %d retried RunPodSandbox, %d unknown exits (255) reported, %d stray CNI plugins ended at restarts, %v",
		stats.seeds, stats.kills, stats.inFlight, stats.pods, stats.ctrs, stats.retries, stats.unknownExits, strays, time.Since(start).Round(time.Second))
}

type chaosStats struct {
	seeds, kills, inFlight, pods, ctrs, retries, unknownExits int
}

func chaosRound(t *testing.T, p *testenv.Pierd, seed uint64, round int, warm string, baseline *nodeObjects, stats *chaosStats) {
	rng := rand.New(rand.NewPCG(seed, 0))
	logDir := t.TempDir()
	pods := make([]*chaosPod, chaosWorkers)
	for w := range pods {
		cfg := podConfig(fmt.Sprintf("chaos-%d-%d", round, w))
		cfg.LogDirectory = logDir
		pods[w] = &chaosPod{cfg: cfg, last: rng.IntN(7)}
	}
	pullRef := reg.Ref(plainImg)
	delay := time.Duration(20+rng.IntN(2500)) * time.Millisecond
	t.Logf("pierd is killed after %v; plans (last step per pod): %v", delay, lastSteps(pods))

	rt, images := p.Runtime, p.Images
	var mu sync.Mutex
	inFlight := 0
	var wg sync.WaitGroup
	for w, cp := range pods {
		wg.Go(func() {
			c, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if w%5 == 4 {
				if _, err := images.PullImage(c, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: pullRef}}); err != nil {
					mu.Lock()
					inFlight++
					mu.Unlock()
					return
				}
			}
			if err := runChaosPod(c, rt, cp, &mu); err != nil {
				mu.Lock()
				cp.failed = err.Error()
				inFlight++
				mu.Unlock()
			}
		})
	}
	time.Sleep(delay)
	// SIGKILL first: Kill closes the client connection before it signals,
	// and pierd would see its calls cancelled before it dies.
	if err := syscall.Kill(p.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	stats.seeds++
	stats.kills++
	stats.inFlight += inFlight
	restart := time.Now()
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("pierd restarted in %v; %d of %d clients were cut off", time.Since(restart).Round(time.Millisecond), inFlight, chaosWorkers)

	checkAfterRestart(t, p, pods, warm, stats)
	// A pull cut short leaves no partial layer in use, and the image is
	// either recorded whole or not at all: a pull now completes it.
	if hasTemp(filepath.Join(p.Root(), "layers")) {
		t.Error("partial layers survived the restart")
	}
	mustPull(t, p, pullRef)
	retryRuns(t, p, pods, stats)

	// Clean up: every pod but the warm-up one, and the pulled image.
	listed := listPods(t, p)
	for _, pod := range listed {
		if pod.Id == warm {
			continue
		}
		if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: pod.Id}); err != nil {
			t.Errorf("stop pod %s (%s): %v", pod.Id, pod.State, err)
		}
		if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.Id}); err != nil {
			t.Errorf("remove pod %s: %v", pod.Id, err)
		}
	}
	if _, err := p.Images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: pullRef}}); err != nil {
		t.Errorf("remove %s: %v", pullRef, err)
	}
	if cs := listContainers(t, p); len(cs) != 0 {
		t.Errorf("%d containers left after their pods were removed", len(cs))
	}
	waitTransientShims(t, p)
	baseline.assertSame(t, snapshotNode(t, p))
}

func lastSteps(pods []*chaosPod) []int {
	var out []int
	for _, cp := range pods {
		out = append(out, cp.last)
	}
	return out
}

// runChaosPod runs a client's plan as kubelet would, up to its last step:
// 0 RunPodSandbox, 1 create a container that exits 3, 2 start it, 3 create
// a sleeper, 4 start it, 5 StopPodSandbox, 6 RemovePodSandbox.
func runChaosPod(c context.Context, rt runtimeapi.RuntimeServiceClient, cp *chaosPod, mu *sync.Mutex) error {
	resp, err := rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cp.cfg})
	if err != nil {
		return err
	}
	mu.Lock()
	cp.id = resp.PodSandboxId
	mu.Unlock()
	specs := []struct {
		name string
		exit int32
		cmd  []string
	}{{"exits", 3, []string{"sh", "-c", "exit 3"}}, {"sleeper", -1, []string{"sleep", "1000"}}}
	for i, s := range specs {
		if cp.last < 1+2*i {
			return nil
		}
		cfg := containerConfig(s.name, s.cmd...)
		r, err := rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: cp.id, Config: cfg, SandboxConfig: cp.cfg})
		if err != nil {
			return err
		}
		cc := &chaosCtr{name: s.name, id: r.ContainerId, exit: s.exit}
		mu.Lock()
		cp.ctrs = append(cp.ctrs, cc)
		mu.Unlock()
		if cp.last < 2+2*i {
			return nil
		}
		if _, err := rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: cc.id}); err != nil {
			return err
		}
		mu.Lock()
		cc.started = true
		mu.Unlock()
	}
	if cp.last < 5 {
		return nil
	}
	mu.Lock()
	cp.stopSent = true
	mu.Unlock()
	if _, err := rt.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: cp.id}); err != nil {
		return err
	}
	if cp.last < 6 {
		return nil
	}
	mu.Lock()
	cp.removeSent = true
	mu.Unlock()
	if _, err := rt.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: cp.id}); err != nil {
		return err
	}
	mu.Lock()
	cp.removed = true
	mu.Unlock()
	return nil
}

// checkAfterRestart checks what the restarted pierd lists against what its
// clients were told, and the node against what it lists.
func checkAfterRestart(t *testing.T, p *testenv.Pierd, pods []*chaosPod, warm string, stats *chaosStats) {
	t.Helper()
	// Containers that exit on their own may have done so while pierd was
	// down: let it catch up with their monitors' exit files.
	var listed []*runtimeapi.PodSandbox
	var ctrs []*runtimeapi.Container
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		listed, ctrs = listPods(t, p), listContainers(t, p)
		settled := true
		for _, c := range ctrs {
			settled = settled && !(c.Metadata.Name == "exits" && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING)
		}
		if settled || time.Now().After(deadline) {
			break
		}
	}
	podByID := map[string]*runtimeapi.PodSandbox{}
	for _, pod := range listed {
		podByID[pod.Id] = pod
	}
	ctrByID := map[string]*runtimeapi.Container{}
	for _, c := range ctrs {
		ctrByID[c.Id] = c
		if podByID[c.PodSandboxId] == nil {
			t.Errorf("container %s (%s) is listed, its pod %s is not", c.Id, c.Metadata.Name, c.PodSandboxId)
		}
	}
	stats.pods += len(listed)
	stats.ctrs += len(ctrs)

	// What clients were told holds.
	for _, cp := range pods {
		if cp.id == "" {
			continue
		}
		pod := podByID[cp.id]
		switch {
		case cp.removed && pod != nil:
			t.Errorf("pod %s was removed (OK answered) and is listed again", cp.id)
		case !cp.removeSent && pod == nil: // a RemovePodSandbox cut short may have finished
			t.Errorf("pod %s (%s) was made (its id answered) and is gone; client: %s", cp.id, cp.cfg.Metadata.Name, cp.failed)
		}
		for _, cc := range cp.ctrs {
			c := ctrByID[cc.id]
			if c == nil {
				// A RemovePodSandbox cut short may have removed some
				// of its containers.
				if pod != nil && !cp.removeSent {
					t.Errorf("container %s (%s) was created (its id answered) and is gone", cc.id, cc.name)
				}
				continue
			}
			if cc.started && c.State == runtimeapi.ContainerState_CONTAINER_CREATED {
				t.Errorf("container %s (%s) was started (OK answered) and is listed created", cc.id, cc.name)
			}
			if c.State != runtimeapi.ContainerState_CONTAINER_EXITED {
				continue
			}
			st := containerStatus(t, p, cc.id)
			switch {
			case st.ExitCode == 255 && st.Reason == "Unknown":
				stats.unknownExits++
				t.Logf("container %s (%s): exit status unknown: %s", cc.id, cc.name, st.Message)
			case cc.exit >= 0 && st.ExitCode != cc.exit && !cp.stopSent:
				t.Errorf("container %s (%s) exits %d; reported %d (%s: %s)", cc.id, cc.name, cc.exit, st.ExitCode, st.Reason, st.Message)
			case cc.exit < 0 && !cp.stopSent:
				t.Errorf("container %s (%s) runs until stopped, was not stopped, and is reported exited %d (%s: %s)", cc.id, cc.name, st.ExitCode, st.Reason, st.Message)
			case cc.exit < 0 && st.ExitCode != 137 && st.ExitCode != 143:
				t.Errorf("container %s (%s) was stopped: exit %d (%s: %s), want 137 or 143", cc.id, cc.name, st.ExitCode, st.Reason, st.Message)
			}
		}
	}

	// What is listed is consistent.
	for _, pod := range listed {
		if pod.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		_, info := inspectPod(t, p, pod.Id)
		if !isNSFS(info.Namespaces["net"]) {
			t.Errorf("ready pod %s: its network namespace %q is not pinned", pod.Id, info.Namespaces["net"])
		}
	}
	for _, c := range ctrs {
		if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		pid := verbosePid(t, p, c.Id)
		if pid <= 0 || !alive(pid) {
			t.Errorf("running container %s (%s): its process %d does not run", c.Id, c.Metadata.Name, pid)
		}
	}

	// The node holds nothing that nothing listed owns.
	waitTransientShims(t, p)
	objs := snapshotNode(t, p)
	owners := map[string]bool{}
	ready := 0
	for _, pod := range listed {
		owners[pod.Id] = true
		if pod.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			ready++
		}
	}
	for _, c := range ctrs {
		owners[c.Id] = true
	}
	for what, ids := range map[string][]string{
		"mount": slices.Collect(maps.Values(objs.mounts)), "IP allocation": slices.Collect(maps.Values(objs.allocs)),
		"iptables rule": objs.ruleOwners, "cgroup": objs.cgroups, "shim monitor": slices.Collect(maps.Values(objs.monitors)),
	} {
		for _, id := range ids {
			if !owners[id] {
				t.Errorf("orphaned %s of %s, which is not listed (node: %s)", what, id, objs)
			}
		}
	}
	t.Logf("after the restart: %d pods (%d ready), %d containers; node: %d mounts, %d veths, %d IP allocations, %d pod iptables rules, %d cgroups, %d shim monitors",
		len(listed), ready, len(ctrs), len(objs.mounts), len(objs.veths), len(objs.allocs), len(objs.ruleOwners), len(objs.cgroups), len(objs.monitors))
	if len(objs.plugins) > 0 {
		t.Errorf("CNI plugins run while pierd is idle: %v", objs.plugins)
	}
	allocated := map[string]bool{}
	for _, id := range objs.allocs {
		allocated[id] = true
	}
	for _, pod := range listed {
		if pod.State == runtimeapi.PodSandboxState_SANDBOX_READY && !allocated[pod.Id] {
			t.Errorf("ready pod %s has no IP allocation", pod.Id)
		}
	}
	if len(objs.veths) < ready || len(objs.veths) > len(listed) {
		t.Errorf("%d veths on the test bridge for %d ready pods of %d listed: %v", len(objs.veths), ready, len(listed), objs.veths)
	}
}

// retryRuns sends each client's RunPodSandbox again, as kubelet retries a
// call that got no answer: a listed pod of that name is AlreadyExists,
// naming its id (kubelet finds it by listing: docs/DESIGN.md); a pod not
// listed is made.
func retryRuns(t *testing.T, p *testenv.Pierd, pods []*chaosPod, stats *chaosStats) {
	t.Helper()
	byName := map[string]string{}
	for _, pod := range listPods(t, p) {
		m := pod.Metadata
		byName[m.Name+"/"+m.Uid] = pod.Id
	}
	for _, cp := range pods {
		m := cp.cfg.Metadata
		existing := byName[m.Name+"/"+m.Uid]
		resp, err := p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cp.cfg})
		stats.retries++
		switch {
		case existing != "" && err == nil && resp.PodSandboxId != existing:
			t.Errorf("retried RunPodSandbox of %s made a second sandbox %s beside %s", m.Name, resp.PodSandboxId, existing)
		case existing != "" && err != nil && (status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), existing)):
			t.Errorf("retried RunPodSandbox of listed %s (%s): %v, want AlreadyExists naming it", m.Name, existing, err)
		case existing == "" && err != nil:
			t.Errorf("retried RunPodSandbox of %s, not listed: %v", m.Name, err)
		}
	}
}

func listPods(t *testing.T, p *testenv.Pierd) []*runtimeapi.PodSandbox {
	t.Helper()
	resp, err := p.Runtime.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Items
}

func listContainers(t *testing.T, p *testenv.Pierd) []*runtimeapi.Container {
	t.Helper()
	resp, err := p.Runtime.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Containers
}

// verbosePid is a container's init pid from its verbose status, 0 if none.
func verbosePid(t *testing.T, p *testenv.Pierd, id string) int {
	t.Helper()
	resp, err := p.Runtime.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatalf("ContainerStatus %s: %v", id, err)
	}
	var info struct{ Pid int }
	json.Unmarshal([]byte(resp.Info["info"]), &info)
	return info.Pid
}

func isNSFS(path string) bool {
	var st unix.Statfs_t
	return path != "" && unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}

// nodeObjects is what the node holds of one pierd's pods and containers,
// each with the id of the pod or container that owns it where that shows.
type nodeObjects struct {
	mounts     map[string]string // mount point under pierd's directory → owner
	veths      []string          // ports of the test bridge
	allocs     map[string]string // host-local's allocated IP → owner
	ruleOwners []string          // pods named by the test network's iptables rules
	rules      int               // iptables rules in all
	cgroups    []string          // container cgroups under the test's parent
	monitors   map[int]string    // shim monitor pid → container
	others     []string          // other processes whose command line names pierd's directory
	plugins    []string          // CNI plugins running (of any pod: pierd is idle when it is read)
}

func (o *nodeObjects) String() string {
	b, _ := json.Marshal(map[string]any{"mounts": o.mounts, "veths": o.veths, "allocs": o.allocs, "ruleOwners": o.ruleOwners,
		"rules": o.rules, "cgroups": o.cgroups, "monitors": o.monitors, "others": o.others, "plugins": o.plugins})
	return string(b)
}

var (
	ownerID  = regexp.MustCompile(`/(?:pods|containers)/([0-9a-f]{64})(?:/|$)`)
	ruleID   = regexp.MustCompile(`id: \\"([0-9a-f]{64})\\"`)
	monitorI = regexp.MustCompile(`^pier-shim monitor id=([0-9a-f]{64}) `)
)

// snapshotNode reads the node's objects of pierd p and the test network.
func snapshotNode(t *testing.T, p *testenv.Pierd) *nodeObjects {
	t.Helper()
	o := &nodeObjects{mounts: map[string]string{}, allocs: map[string]string{}, monitors: map[int]string{}}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], p.Dir+"/") {
			owner := "?"
			if m := ownerID.FindStringSubmatch(f[4]); m != nil {
				owner = m[1]
			}
			o.mounts[f[4]] = owner
		}
	}
	out, err := output("ip", "-o", "link", "show", "master", network.Bridge)
	if err == nil {
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(l); len(f) > 1 {
				o.veths = append(o.veths, strings.TrimSuffix(f[1], ":"))
			}
		}
	}
	entries, _ := os.ReadDir(filepath.Join(network.DataDir, "pier-"+network.Bridge))
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "last_reserved_ip") || e.Name() == "lock" {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(network.DataDir, "pier-"+network.Bridge, e.Name()))
		owner, _, _ := strings.Cut(string(b), "\n")
		o.allocs[e.Name()] = strings.TrimSpace(owner)
	}
	if out, err = output("iptables-save"); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-A ") {
			o.rules++
		}
		if strings.Contains(l, `name: \"pier-`+network.Bridge+`\"`) {
			if m := ruleID.FindStringSubmatch(l); m != nil {
				o.ruleOwners = append(o.ruleOwners, m[1])
			}
		}
	}
	// (A pattern that ends in "/" matches nothing.)
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*/pier-e2e/*")
	seen := map[string]bool{}
	for _, d := range cgroups {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			continue
		}
		if id := filepath.Base(d); !seen[id] {
			seen[id] = true
			o.cgroups = append(o.cgroups, id)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		cmd := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		if env, _ := os.ReadFile(filepath.Join(filepath.Dir(f), "environ")); strings.Contains(string(env), "CNI_CONTAINERID=") {
			o.plugins = append(o.plugins, cmd)
		}
		if err != nil || !strings.Contains(string(b), p.Dir) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if pid == p.Pid() || pid == os.Getpid() {
			continue
		}
		if m := monitorI.FindStringSubmatch(cmd); m != nil {
			o.monitors[pid] = m[1]
		} else {
			o.others = append(o.others, fmt.Sprintf("%d: %s", pid, cmd))
		}
	}
	slices.Sort(o.veths)
	slices.Sort(o.ruleOwners)
	slices.Sort(o.cgroups)
	return o
}

// assertSame fails the test where the node differs from o, as it was.
func (o *nodeObjects) assertSame(t *testing.T, now *nodeObjects) {
	t.Helper()
	same := len(o.mounts) == len(now.mounts) && len(o.veths) == len(now.veths) && len(o.allocs) == len(now.allocs) &&
		slices.Equal(o.ruleOwners, now.ruleOwners) && o.rules == now.rules && slices.Equal(o.cgroups, now.cgroups) &&
		len(o.monitors) == len(now.monitors) && len(now.others) == 0 && len(now.plugins) == 0
	for m := range o.mounts {
		same = same && now.mounts[m] != ""
	}
	if !same {
		t.Errorf("the node holds other objects than before:\nbefore %s\nafter  %s", o, now)
	}
}

// waitTransientShims waits for the shims that were creating a container
// for a pierd that was killed: they find their handshake broken and exit.
func waitTransientShims(t *testing.T, p *testenv.Pierd) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		others := snapshotNode(t, p).others
		if len(others) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of pierd's directory left: %v", others)
			return
		}
	}
}

// output runs a command and returns its standard output.
func output(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}

// TestChaosShimKilled kills a running container's shim monitor with
// SIGKILL: the container is reported not running, with a reason, within
// seconds; kubelet's way on from there works: StopContainer ends its
// process, RemoveContainer takes its cgroup, and a new container of the
// same pod (the restart's next attempt) starts and runs.
func TestChaosShimKilled(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "shimchaos")
	id := startContainer(t, p, podID, pod, containerConfig("victim", "sleep", "4321"))
	waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	shim, init := shimPid(t, p, id), containerPid(t, p, id)
	if !slices.Contains(snapshotNode(t, p).cgroups, id) {
		t.Fatalf("no cgroup of the container under the test's parent: the test cannot see one left")
	}
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var st *runtimeapi.ContainerStatus
	for st = containerStatus(t, p, id); st.State == runtimeapi.ContainerState_CONTAINER_RUNNING; st = containerStatus(t, p, id) {
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("container still reported running 10 s after its shim was killed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%v after the shim's SIGKILL: %v, exit %d, reason %q: %s", time.Since(killed).Round(time.Millisecond), st.State, st.ExitCode, st.Reason, st.Message)
	if st.State == runtimeapi.ContainerState_CONTAINER_CREATED || st.Reason == "" || st.Message == "" {
		t.Errorf("container after its shim was killed: %v, reason %q, message %q", st.State, st.Reason, st.Message)
	}
	// kubelet stops a container it does not see exited before it starts
	// the next one.
	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 2}); err != nil {
		t.Fatalf("StopContainer after the shim was killed: %v", err)
	}
	if st = containerStatus(t, p, id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Errorf("after StopContainer: %v (%s)", st.State, st.Reason)
	}
	for deadline := time.Now().Add(5 * time.Second); alive(init); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the container's process %d survived StopContainer", init)
		}
	}
	if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(snapshotNode(t, p).cgroups, id) {
		t.Errorf("the container's cgroup is left after its removal")
	}
	again := containerConfig("victim", "sleep", "4321")
	again.Metadata.Attempt = 1
	id2 := startContainer(t, p, podID, pod, again)
	waitState(t, p, id2, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if out := execOut(t, p, id2, "echo", "again"); strings.TrimSpace(out) != "again" {
		t.Errorf("exec in the restarted container: %q", out)
	}
}
