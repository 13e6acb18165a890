package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// nriEvent is what an NRI plugin of the tests was told: the event, and
// the ids and names of the pod and container it is about.
type nriEvent struct {
	kind           string
	podID, podName string
	ctrID, ctrName string
	ctrPod         string // the container's pod id, as the container says it
}

func (e nriEvent) String() string {
	if e.ctrID == "" {
		return fmt.Sprintf("%s(pod %s %.12s)", e.kind, e.podName, e.podID)
	}
	return fmt.Sprintf("%s(pod %s %.12s, container %s %.12s of pod %.12s)", e.kind, e.podName, e.podID, e.ctrName, e.ctrID, e.ctrPod)
}

// nriPlugin is an NRI plugin run in the test process through the
// library's stub: it records what it is told, and answers CreateContainer
// with create, if set.
type nriPlugin struct {
	name, idx string
	create    func(ctx context.Context, pod *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, error)
	// hold, if set, runs in Synchronize before it answers.
	hold func(pods []*api.PodSandbox, ctrs []*api.Container)

	synced    chan struct{} // closed at the first Synchronize
	closed    chan struct{} // closed when the connection is gone
	closeOnce sync.Once

	mu       sync.Mutex
	events   []nriEvent
	syncPods []*api.PodSandbox
	syncCtrs []*api.Container
	stub     stub.Stub
}

func newNRIPlugin(idx, name string) *nriPlugin {
	return &nriPlugin{idx: idx, name: name, synced: make(chan struct{}), closed: make(chan struct{})}
}

func (pl *nriPlugin) record(kind string, pod *api.PodSandbox, c *api.Container) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.events = append(pl.events, nriEvent{kind: kind, podID: pod.GetId(), podName: pod.GetName(),
		ctrID: c.GetId(), ctrName: c.GetName(), ctrPod: c.GetPodSandboxId()})
}

// seen is what the plugin was told so far.
func (pl *nriPlugin) seen() []nriEvent {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return slices.Clone(pl.events)
}

// waitFor waits for the plugin to be told an event of kind about
// container (or pod, for a pod event) id, or any if id is "", and returns
// the first.
func (pl *nriPlugin) waitFor(t *testing.T, kind, id string) nriEvent {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, e := range pl.seen() {
			if e.kind == kind && (id == "" || e.ctrID == id || e.ctrID == "" && e.podID == id) {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin %s was not told %s of %s; it was told %v", pl.name, kind, id, pl.seen())
		}
	}
}

// synchronised is what the plugin was synchronised with.
func (pl *nriPlugin) synchronised() ([]*api.PodSandbox, []*api.Container) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.syncPods, pl.syncCtrs
}

func (pl *nriPlugin) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	if pl.hold != nil {
		pl.hold(pods, ctrs)
	}
	pl.mu.Lock()
	pl.syncPods, pl.syncCtrs = pods, ctrs
	pl.mu.Unlock()
	select {
	case <-pl.synced:
	default:
		close(pl.synced)
	}
	return nil, nil
}

func (pl *nriPlugin) RunPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	pl.record("RunPodSandbox", pod, nil)
	return nil
}

func (pl *nriPlugin) StopPodSandbox(_ context.Context, pod *api.PodSandbox) error {
	pl.record("StopPodSandbox", pod, nil)
	return nil
}

func (pl *nriPlugin) RemovePodSandbox(_ context.Context, pod *api.PodSandbox) error {
	pl.record("RemovePodSandbox", pod, nil)
	return nil
}

func (pl *nriPlugin) CreateContainer(ctx context.Context, pod *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	pl.record("CreateContainer", pod, c)
	if pl.create == nil {
		return nil, nil, nil
	}
	adj, err := pl.create(ctx, pod, c)
	return adj, nil, err
}

func (pl *nriPlugin) PostCreateContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	pl.record("PostCreateContainer", pod, c)
	return nil
}

func (pl *nriPlugin) StartContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	pl.record("StartContainer", pod, c)
	return nil
}

func (pl *nriPlugin) PostStartContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	pl.record("PostStartContainer", pod, c)
	return nil
}

func (pl *nriPlugin) StopContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	pl.record("StopContainer", pod, c)
	return nil, nil
}

func (pl *nriPlugin) RemoveContainer(_ context.Context, pod *api.PodSandbox, c *api.Container) error {
	pl.record("RemoveContainer", pod, c)
	return nil
}

// connect connects the plugin to pierd's NRI socket and waits until
// pierd has synchronised it; the plugin disconnects when the test ends.
func (pl *nriPlugin) connect(t *testing.T, socket string, opts ...stub.Option) {
	t.Helper()
	s, err := stub.New(pl, append([]stub.Option{
		stub.WithSocketPath(socket), stub.WithPluginIdx(pl.idx), stub.WithPluginName(pl.name),
		stub.WithLogger(nriTestLogger{}),
		stub.WithOnClose(func() { pl.closeOnce.Do(func() { close(pl.closed) }) }),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("start NRI plugin %s: %v", pl.name, err)
	}
	pl.stub = s
	t.Cleanup(s.Stop)
	select {
	case <-pl.synced:
	case <-time.After(20 * time.Second):
		t.Fatalf("NRI plugin %s was not synchronised", pl.name)
	}
}

// nriTestLogger keeps the stub's log to its warnings and errors.
type nriTestLogger struct{}

func (nriTestLogger) Debugf(context.Context, string, ...any) {}
func (nriTestLogger) Infof(context.Context, string, ...any)  {}
func (nriTestLogger) Warnf(_ context.Context, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "NRI stub: "+format+"\n", args...)
}
func (nriTestLogger) Errorf(_ context.Context, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "NRI stub: "+format+"\n", args...)
}

// startNRIPierd starts a pierd with NRI on, its socket, plugin and
// configuration directories in a temporary directory, and this plugin
// request timeout; it returns pierd and the socket's path.
func startNRIPierd(t *testing.T, requestTimeout string) (*testenv.Pierd, string) {
	t.Helper()
	dir := t.TempDir()
	socket := filepath.Join(dir, "nri.sock")
	if len(socket) >= 100 {
		t.Fatalf("NRI socket path %s is too long for a unix socket", socket)
	}
	p := startPierd(t, fmt.Sprintf("[nri]\nenable = true\nsocket_path = %q\nplugin_path = %q\nplugin_config_path = %q\nplugin_request_timeout = %q\n",
		socket, filepath.Join(dir, "plugins"), filepath.Join(dir, "conf.d"), requestTimeout))
	return p, socket
}

// nriInfo is Status's verbose info "nri".
func nriInfo(t *testing.T, p *testenv.Pierd) map[string]any {
	t.Helper()
	resp, err := p.Runtime.Status(ctx(t), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(resp.Info["nri"]), &info); err != nil {
		t.Fatalf("Status info nri %q: %v", resp.Info["nri"], err)
	}
	return info
}

// hostMemoryLimit reads the memory limit of process pid's cgroup from the
// host's cgroup file system; it returns the cgroup's path too.
func hostMemoryLimit(t *testing.T, pid int) (string, int64) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var file string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if cgroups.Mode() == cgroups.Unified && f[0] == "0" {
			file = filepath.Join("/sys/fs/cgroup", f[2], "memory.max")
		} else if cgroups.Mode() != cgroups.Unified && slices.Contains(strings.Split(f[1], ","), "memory") {
			file = filepath.Join("/sys/fs/cgroup/memory", f[2], "memory.limit_in_bytes")
		}
	}
	if file == "" {
		t.Fatalf("no memory cgroup of process %d in %q", pid, b)
	}
	v, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return file, limit
}

// TestNRIPluginAdjustsContainer: a plugin connected to pierd's NRI socket
// (which Status reports) adjusts a container it is asked
// about, adding an environment variable and a 64 MiB memory limit: the
// container's processes have the variable, and its memory cgroup the
// limit, read from inside the container and from the host. The plugin
// is told of the pod's and container's life, in order, with their ids
// and names.
func TestNRIPluginAdjustsContainer(t *testing.T) {
	p, socket := startNRIPierd(t, "2s")
	info := nriInfo(t, p)
	if info["enabled"] != true || info["socketPath"] != socket || info["requestTimeout"] != "2s" {
		t.Errorf("Status info nri: %v; want enabled, socket %s, request timeout 2s", info, socket)
	}
	if fi, err := os.Stat(socket); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("NRI socket %s: %v %v", socket, fi.Mode(), err)
	}
	mustPull(t, p, reg.Ref(busyboxImg))
	const limit = 64 << 20
	pl := newNRIPlugin("10", "e2e-adjust")
	pl.create = func(context.Context, *api.PodSandbox, *api.Container) (*api.ContainerAdjustment, error) {
		adj := &api.ContainerAdjustment{}
		adj.AddEnv("PIER_NRI", "adjusted")
		adj.SetLinuxMemoryLimit(limit)
		return adj, nil
	}
	pl.connect(t, socket)
	if pods, ctrs := pl.synchronised(); len(pods) != 0 || len(ctrs) != 0 {
		t.Errorf("plugin synchronised with %d pods and %d containers on an empty node", len(pods), len(ctrs))
	}

	podID, pod := podWithLogs(t, p, "nri-adjust")
	id := startContainer(t, p, podID, pod, containerConfig("adjusted", "sleep", "1000"))
	waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if env := execOut(t, p, id, "env"); !slices.Contains(strings.Split(env, "\n"), "PIER_NRI=adjusted") {
		t.Errorf("exec env in the container:\n%s\nwant PIER_NRI=adjusted", env)
	}
	pid := verbosePid(t, p, id)
	if env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); err != nil || !slices.Contains(strings.Split(string(env), "\x00"), "PIER_NRI=adjusted") {
		t.Errorf("the container's process %d's environment %q has no PIER_NRI=adjusted: %v", pid, env, err)
	}
	inside := execOut(t, p, id, "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max")
	if strings.TrimSpace(inside) != strconv.Itoa(limit) {
		t.Errorf("memory limit read in the container: %q, want %d", inside, limit)
	}
	file, host := hostMemoryLimit(t, pid)
	if !strings.Contains(file, id) || host != limit {
		t.Errorf("memory limit of the container's cgroup read on the host: %s: %d, want the container's cgroup with %d", file, host, limit)
	}
	// The status reports the adjusted limit, which a resize starts from.
	if st, err := p.Runtime.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id}); err != nil || st.GetStatus().GetResources().GetLinux().GetMemoryLimitInBytes() != limit {
		t.Errorf("ContainerStatus resources %v (%v), want the memory limit %d", st.GetStatus().GetResources(), err, limit)
	}

	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	pl.waitFor(t, "StopContainer", id)
	if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	pl.waitFor(t, "RemovePodSandbox", podID)
	podEvent := func(kind string) nriEvent {
		return nriEvent{kind: kind, podID: podID, podName: "nri-adjust"}
	}
	ctrEvent := func(kind string) nriEvent {
		return nriEvent{kind: kind, podID: podID, podName: "nri-adjust", ctrID: id, ctrName: "adjusted", ctrPod: podID}
	}
	want := []nriEvent{
		podEvent("RunPodSandbox"),
		ctrEvent("CreateContainer"), ctrEvent("PostCreateContainer"), ctrEvent("StartContainer"), ctrEvent("PostStartContainer"),
		ctrEvent("StopContainer"), ctrEvent("RemoveContainer"),
		podEvent("StopPodSandbox"), podEvent("RemovePodSandbox"),
	}
	if got := pl.seen(); !slices.Equal(got, want) {
		t.Errorf("the plugin was told\n%v\nwant\n%v", got, want)
	}
}

// TestNRIPluginFailsCreate: a plugin whose CreateContainer fails fails the
// container's create with its message, and nothing of the container is
// left: not listed, no directory, mount, cgroup or process, its name and
// image free; the plugin is told it stopped and was removed. The pod
// stays usable: once the plugin is gone, the container is created.
func TestNRIPluginFailsCreate(t *testing.T) {
	p, socket := startNRIPierd(t, "2s")
	mustPull(t, p, reg.Ref(busyboxImg))
	const refusal = "pier-e2e plugin refuses this container"
	pl := newNRIPlugin("20", "e2e-refuse")
	pl.create = func(context.Context, *api.PodSandbox, *api.Container) (*api.ContainerAdjustment, error) {
		return nil, errors.New(refusal)
	}
	pl.connect(t, socket)
	podID, pod := podWithLogs(t, p, "nri-refuse")

	stateDirs := []string{filepath.Join(p.Root(), "containers"), filepath.Join(p.Dir, "state", "containers"), filepath.Join(p.Dir, "state", "s")}
	entries := func() []string {
		var names []string
		for _, d := range stateDirs {
			es, _ := os.ReadDir(d)
			for _, e := range es {
				names = append(names, filepath.Join(d, e.Name()))
			}
		}
		return names
	}
	before, beforeNode := entries(), snapshotNode(t, p)
	cfg := containerConfig("refused", "sleep", "1000")
	_, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err == nil || !strings.Contains(err.Error(), refusal) {
		t.Fatalf("CreateContainer with a plugin that refuses it: %v; want an error with %q", err, refusal)
	}
	t.Logf("CreateContainer: %v", err)
	id := pl.waitFor(t, "CreateContainer", "").ctrID
	if id == "" {
		t.Fatalf("the plugin was told of no container id: %v", pl.seen())
	}
	pl.waitFor(t, "StopContainer", id)
	pl.waitFor(t, "RemoveContainer", id)

	resp, err := p.Runtime.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}})
	if err != nil || len(resp.Containers) != 0 {
		t.Errorf("ListContainers of the pod after the failed create: %v %v", resp.GetContainers(), err)
	}
	if after := entries(); !slices.Equal(before, after) {
		t.Errorf("pierd's container directories held %v before the failed create, %v after", before, after)
	}
	for _, d := range stateDirs {
		if _, err := os.Lstat(filepath.Join(d, id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left: %v", filepath.Join(d, id), err)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, id) {
			t.Errorf("a mount of the failed container is left: %s", l)
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		if b, _ := os.ReadFile(f); strings.Contains(string(b), id) {
			t.Errorf("process %s of the failed container is left: %q", f, b)
		}
	}
	beforeNode.assertSame(t, snapshotNode(t, p))
	// Its image is not held: removed, its layers go.
	if _, err := p.Images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: reg.Ref(busyboxImg)}}); err != nil {
		t.Fatal(err)
	}
	if left := storeEntries(t, p); len(left) != 0 {
		t.Errorf("the image store holds %v after the image was removed: the failed container holds its layers", left)
	}
	mustPull(t, p, reg.Ref(busyboxImg))

	pl.stub.Stop()
	select {
	case <-pl.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the plugin's connection did not close")
	}
	told := len(pl.seen())
	id2 := startContainer(t, p, podID, pod, cfg) // the same name: it is free
	waitState(t, p, id2, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if out := execOut(t, p, id2, "echo", "usable"); strings.TrimSpace(out) != "usable" {
		t.Errorf("exec in the container created after the plugin left: %q", out)
	}
	if got := pl.seen(); len(got) != told {
		t.Errorf("the plugin that left was told %v", got[told:])
	}
}

// TestNRIPluginHangs: a plugin that does not answer CreateContainer holds
// the create for the configured request timeout alone (3 s, not the
// library's default of 2 s), while pierd answers other requests; it is
// then disconnected, and the create fails if the plugin's failure policy
// says so (else it proceeds without the plugin). Later creates do not
// wait for it.
func TestNRIPluginHangs(t *testing.T) {
	const timeout = 3 * time.Second
	p, socket := startNRIPierd(t, timeout.String())
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "nri-hang")
	for i, c := range []struct {
		name   string
		policy *api.FailurePolicy
		fails  bool
	}{
		{"fail-request", &api.FailurePolicy{FailRequest: true}, true},
		{"default-policy", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			pl := newNRIPlugin(fmt.Sprintf("3%d", i), "e2e-hang-"+c.name)
			entered, release := make(chan time.Time, 1), make(chan struct{})
			pl.create = func(context.Context, *api.PodSandbox, *api.Container) (*api.ContainerAdjustment, error) {
				select {
				case entered <- time.Now():
				default:
				}
				<-release // past its context's end
				adj := &api.ContainerAdjustment{}
				adj.AddEnv("PIER_NRI", "late")
				return adj, nil
			}
			var opts []stub.Option
			if c.policy != nil {
				opts = append(opts, stub.WithFailurePolicy(c.policy))
			}
			pl.connect(t, socket, opts...)
			defer close(release)

			cfg := containerConfig("hang-"+c.name, "sleep", "1000")
			type result struct {
				id  string
				err error
				at  time.Time
			}
			done := make(chan result, 1)
			go func() {
				resp, err := p.Runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
				done <- result{resp.GetContainerId(), err, time.Now()}
			}()
			var asked time.Time // when the plugin was asked
			select {
			case asked = <-entered:
			case <-time.After(30 * time.Second):
				t.Fatal("the plugin was not asked to create the container")
			}
			lctx, cancel := context.WithTimeout(context.Background(), time.Second)
			listed := time.Now()
			_, err := p.Runtime.ListPodSandbox(lctx, &runtimeapi.ListPodSandboxRequest{})
			if err == nil {
				_, err = p.Runtime.ListContainers(lctx, &runtimeapi.ListContainersRequest{})
			}
			cancel()
			if err != nil {
				t.Errorf("ListPodSandbox and ListContainers while a plugin hangs: %v", err)
			}
			t.Logf("ListPodSandbox and ListContainers while the plugin hangs: %v", time.Since(listed))
			var r result
			select {
			case r = <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("CreateContainer did not return in 30 s with a plugin that hangs")
			}
			held := r.at.Sub(asked)
			t.Logf("CreateContainer returned %v after the plugin was asked: %v", held, r.err)
			if held < timeout-200*time.Millisecond || held > timeout+6*time.Second {
				t.Errorf("CreateContainer returned %v after the plugin was asked, want about the %v request timeout", held, timeout)
			}
			if c.fails && (r.err == nil || !strings.Contains(r.err.Error(), "e2e-hang")) {
				t.Errorf("CreateContainer with a plugin that hangs and fails requests: %v; want an error naming the plugin", r.err)
			}
			if !c.fails {
				if r.err != nil {
					t.Fatalf("CreateContainer with a plugin that hangs and lets requests proceed: %v", r.err)
				}
				p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: r.id})
			}
			select {
			case <-pl.closed:
			case <-time.After(10 * time.Second):
				t.Error("the plugin that hung is still connected")
			}
			told := len(pl.seen())
			start := time.Now()
			id := startContainer(t, p, podID, pod, cfg)
			if d := time.Since(start); d > timeout-200*time.Millisecond {
				t.Errorf("a create after the plugin was dropped took %v", d)
			}
			waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
			if env := execOut(t, p, id, "env"); strings.Contains(env, "PIER_NRI") {
				t.Errorf("the container has the dropped plugin's adjustment:\n%s", env)
			}
			if got := pl.seen(); len(got) != told {
				t.Errorf("the plugin that was dropped was told %v", got[told:])
			}
			if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestNRIPluginSynchronized: a plugin that connects when a pod and a
// running container exist is synchronised with them, and told of their
// life from then on; a pod and a container made while it is being
// synchronised are not lost to it.
func TestNRIPluginSynchronized(t *testing.T) {
	// Time to hold a synchronisation while a pod and a container are made.
	p, socket := startNRIPierd(t, "10s")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "nri-early")
	id := startContainer(t, p, podID, pod, containerConfig("early", "sleep", "1000"))
	waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)

	pl := newNRIPlugin("40", "e2e-late")
	late := hostPod("nri-late")
	lateCtr := containerConfig("late", "sleep", "1000")
	type made struct {
		what, id string
		err      error
		at       time.Time
	}
	madeC := make(chan made, 2)
	var released time.Time
	pl.hold = func([]*api.PodSandbox, []*api.Container) {
		// A pod and a container are made during the synchronisation.
		go func() {
			resp, err := p.Runtime.RunPodSandbox(context.Background(), &runtimeapi.RunPodSandboxRequest{Config: late})
			madeC <- made{"pod", resp.GetPodSandboxId(), err, time.Now()}
		}()
		go func() {
			resp, err := p.Runtime.CreateContainer(context.Background(), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: lateCtr, SandboxConfig: pod})
			madeC <- made{"container", resp.GetContainerId(), err, time.Now()}
		}()
		time.Sleep(3 * time.Second)
		released = time.Now()
	}
	pl.connect(t, socket)
	syncPods, syncCtrs := pl.synchronised()
	i := slices.IndexFunc(syncPods, func(sp *api.PodSandbox) bool { return sp.GetId() == podID })
	if i < 0 || syncPods[i].GetName() != "nri-early" || syncPods[i].GetUid() != pod.Metadata.Uid {
		t.Errorf("the plugin was synchronised with pods %v; want %s (nri-early)", syncPods, podID)
	}
	i = slices.IndexFunc(syncCtrs, func(c *api.Container) bool { return c.GetId() == id })
	if i < 0 || syncCtrs[i].GetName() != "early" || syncCtrs[i].GetPodSandboxId() != podID || syncCtrs[i].GetState() != api.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the plugin was synchronised with containers %v; want %s (early, running, of pod %s)", syncCtrs, id, podID)
	}

	for range 2 {
		m := <-madeC
		if m.err != nil {
			t.Fatalf("%s made during the synchronisation: %v", m.what, m.err)
		}
		t.Logf("%s made %v after the synchronisation was released", m.what, m.at.Sub(released))
		known := slices.ContainsFunc(syncPods, func(sp *api.PodSandbox) bool { return sp.GetId() == m.id }) ||
			slices.ContainsFunc(syncCtrs, func(c *api.Container) bool { return c.GetId() == m.id })
		if !known {
			kind := map[string]string{"pod": "RunPodSandbox", "container": "CreateContainer"}[m.what]
			pl.waitFor(t, kind, m.id)
		}
		if m.what == "pod" {
			t.Cleanup(func() {
				p.Runtime.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: m.id})
			})
		}
	}

	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	e := pl.waitFor(t, "StopContainer", id)
	if e.podID != podID || e.ctrName != "early" {
		t.Errorf("the plugin was told %v", e)
	}
}

// TestNRIDisabled: with NRI off (the default), Status says so and no
// socket is made for plugins, at the configured path.
func TestNRIDisabled(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "nri.sock")
	p := startPierd(t, fmt.Sprintf("[nri]\nsocket_path = %q\n", socket))
	if info := nriInfo(t, p); len(info) != 1 || info["enabled"] != false {
		t.Errorf("Status info nri: %v; want enabled false alone", info)
	}
	if _, err := os.Lstat(socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NRI socket %s with NRI off: %v", socket, err)
	}
	if es, _ := os.ReadDir(dir); len(es) != 0 {
		t.Errorf("the NRI socket's directory holds %v with NRI off", es)
	}
}

// TestNRISocketMode: the NRI socket is root's alone, mode 0600, as
// cmd/pierd/default.toml says, whatever pierd's umask.
//
// KNOWN PIER BUG (reported, not fixed here): this fails. The adaptation
// library makes the socket with net.ListenUnix, and pier leaves its mode
// to pierd's umask: srwxr-xr-x under umask 022 (only root may connect,
// since connecting takes write permission), srwxrwxrwx under umask 000
// (anyone who can reach the directory may connect and adjust containers).
func TestNRISocketMode(t *testing.T) {
	_, socket := startNRIPierd(t, "2s")
	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("NRI socket %s: %v; want a socket of mode 0600", socket, fi.Mode())
	}
}

// TestNRIPluginAfterRestart: a plugin that connects to a restarted pierd
// is synchronised with the pod and the running container made before the
// restart, and told when that container stops and is removed.
func TestNRIPluginAfterRestart(t *testing.T) {
	p, socket := startNRIPierd(t, "2s")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "nri-restart")
	id := startContainer(t, p, podID, pod, containerConfig("survivor", "sleep", "1000"))
	waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	pl := newNRIPlugin("50", "e2e-restart")
	pl.connect(t, socket)
	pods, ctrs := pl.synchronised()
	if len(pods) != 1 || pods[0].GetId() != podID || len(ctrs) != 1 || ctrs[0].GetId() != id ||
		ctrs[0].GetState() != api.ContainerState_CONTAINER_RUNNING || !slices.Contains(ctrs[0].GetEnv(), "HOSTNAME=nri-restart") {
		t.Errorf("plugin synchronised after the restart with pods %v, containers %v; want pod %s and running container %s with its spec's env", pods, ctrs, podID, id)
	}
	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	pl.waitFor(t, "StopContainer", id)
	if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	pl.waitFor(t, "RemoveContainer", id)
}
