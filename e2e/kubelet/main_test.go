// Package kubelet is pier's end-to-end suite with the real kubelet: a
// kubelet in standalone mode (static pods from a manifest directory, no API
// server) runs against a pierd started by the test, and every check goes
// through what kubelet does and reports: its /pods endpoint on the
// read-only port, the files it writes (pod logs, volumes), and pier's CRI.
//
// TestMain builds the kubelet (build-kubelet.sh, into a cache outside the
// repository, $PIER_KUBELET or /var/cache/pier-e2e/kubelet-<version>), pier,
// a registry on loopback with the test images and a CNI bridge network.
// Each test starts its own pierd and kubelet (kubelet owns its runtime:
// it stops every pod it did not make) and removes everything they made,
// even when it fails or is interrupted. The tests need root.
//
// TestKubelet runs most checks on one node with all its static pods at
// once (about two minutes); TestImageGC waits for kubelet's five-minute
// image garbage collection period beside it. TestKubeletRuntimeClass
// gives its kubelet a fake API server (apiserver_test.go): RuntimeClasses
// come only from an API server, and without one kubelet ignores
// runtimeClassName. PIER_E2E_KEEP_LOGS=dir keeps each test's pierd and
// kubelet logs in dir.
package kubelet

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
	"github.com/pier-runtime/pier/internal/hostlock"
)

var (
	kubeletBin string
	pierdBin   string
	reg        *testenv.Registry
	network    *testenv.Network
	// hugepages2Mi is how many 2 MiB huge pages the node has for the tests.
	hugepages2Mi int
)

// Test images, pushed to reg by TestMain.
const (
	busyboxImg  = "e2e/busybox:1"
	whiteoutImg = "e2e/whiteout:1" // mounted as an image volume
	gcUsedImg   = "e2e/gc:used"
	gcUnusedImg = "e2e/gc:unused"
	gcPinnedImg = "e2e/gc:pinned"
)

// nodeName is the kubelets' --hostname-override.
const nodeName = "pier-e2e-node"

// cgroupRoot holds the kubelets' cgroupRoots (cgroupRoot/<test>): kubepods
// and the pods' cgroups are made below them, and removed with them.
const cgroupRoot = "/pier-e2e-kubelet"

// cgroupDriver is the cgroup driver pierd is configured with (and kubelet
// takes from it): $PIER_CGROUP_DRIVER, systemd or cgroupfs; pier's choice
// for the node when unset.
var cgroupDriver = os.Getenv("PIER_CGROUP_DRIVER")

// runtimeHandler is pierd's default runtime handler, which kubelet's pods
// get: $PIER_RUNTIME (runc, crun), pier's default when unset.
var runtimeHandler = os.Getenv("PIER_RUNTIME")

// hugepagesWanted is how many 2 MiB huge pages TestMain reserves.
const hugepagesWanted = 8

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e/kubelet: skipped: the kubelet suite needs root")
		os.Exit(0)
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e/kubelet setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	var err error
	if kubeletBin, err = testenv.EnsureKubelet("build-kubelet.sh", os.Stdout); err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "pier-e2e-kubelet-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	if pierdBin, err = testenv.BuildPier("../..", dir, false); err != nil {
		return 0, err
	}
	// The cni and e2e packages change the host's network too.
	unlock, err := hostlock.Lock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	// What a run killed half-way left behind.
	testenv.RemoveCgroupTree(cgroupRoot)

	if reg, err = testenv.StartRegistry(testenv.RegistryOptions{}); err != nil {
		return 0, err
	}
	defer reg.Close()
	if err := pushImages(); err != nil {
		return 0, err
	}
	if network, err = testenv.NewNetwork(filepath.Join(dir, "cni"), "pierkube0", "10.95.0.0/16"); err != nil {
		return 0, err
	}
	defer network.Close()
	restoreHugepages, err := reserveHugepages(hugepagesWanted)
	if err != nil {
		return 0, err
	}
	defer restoreHugepages()
	restoreHost, err := testenv.SaveKubeletHost()
	if err != nil {
		return 0, err
	}
	restore := func() {
		if err := testenv.RemoveCgroupTree(cgroupRoot); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/kubelet:", err)
		}
		if err := restoreHost(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/kubelet:", err)
		}
		restoreHugepages()
	}
	defer restore()

	// A test binary stopped by a signal or by its -timeout runs no cleanup:
	// tear the nodes down first, so that no kubelet, pod or cgroup is left.
	flag.Parse()
	emergency := func(why string) {
		fmt.Fprintf(os.Stderr, "e2e/kubelet: %s: tearing down the nodes\n", why)
		closeAllNodes()
		network.Close()
		restore()
		os.RemoveAll(dir)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		emergency(s.String())
		os.Exit(2)
	}()
	if timeout := flag.Lookup("test.timeout").Value.(flag.Getter).Get().(time.Duration); timeout > 0 {
		// Before the testing package's panic.
		watchdog := time.AfterFunc(timeout-timeout/20, func() { emergency("the test timeout is near") })
		defer watchdog.Stop()
	}
	return m.Run(), nil
}

// pushImages pushes busybox, and for the image GC test three images that
// differ only in a label.
func pushImages() error {
	bb, err := testenv.Busybox()
	if err != nil {
		return err
	}
	if _, err := reg.Push(busyboxImg, bb); err != nil {
		return err
	}
	wo, err := testenv.Whiteout()
	if err != nil {
		return err
	}
	if _, err := reg.Push(whiteoutImg, wo); err != nil {
		return err
	}
	cf, err := bb.ConfigFile()
	if err != nil {
		return err
	}
	for _, path := range []string{gcUsedImg, gcUnusedImg, gcPinnedImg} {
		cfg := *cf.Config.DeepCopy()
		cfg.Labels = map[string]string{"pier.e2e/image": path}
		img, err := mutate.Config(bb, cfg)
		if err != nil {
			return err
		}
		if _, err := reg.Push(path, img); err != nil {
			return err
		}
	}
	return nil
}

// reserveHugepages makes the node have at least n 2 MiB huge pages (kubelet
// admits pods asking for hugepages-2Mi only up to what the node has) and
// returns the function that puts the old number back.
func reserveHugepages(n int) (func(), error) {
	const file = "/proc/sys/vm/nr_hugepages"
	old, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	have, _ := strconv.Atoi(strings.TrimSpace(string(old)))
	if have < n {
		if err := os.WriteFile(file, []byte(strconv.Itoa(n)), 0o644); err != nil {
			return nil, err
		}
	}
	now, _ := os.ReadFile(file)
	hugepages2Mi, _ = strconv.Atoi(strings.TrimSpace(string(now)))
	return func() { os.WriteFile(file, old, 0o644) }, nil
}

// node is a pierd and a kubelet that uses it.
type node struct {
	pierd   *testenv.Pierd
	kubelet *testenv.Kubelet
	dir     string // holds pier/ and kubelet/

	closeOnce sync.Once
	closeErr  error
}

// liveNodes are the nodes not torn down yet.
var (
	liveMu    sync.Mutex
	liveNodes = map[*node]bool{}
)

// closeAllNodes tears down every live node.
func closeAllNodes() {
	liveMu.Lock()
	nodes := slices.Collect(maps.Keys(liveNodes))
	liveMu.Unlock()
	for _, n := range nodes {
		if err := n.close(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e/kubelet: tear down:", err)
		}
		// The test's temporary directories, which its cleanup would remove.
		os.RemoveAll(filepath.Dir(n.dir))
	}
}

// nodeOptions say how to start a node.
type nodeOptions struct {
	pierConfig  string         // extra pierd configuration (TOML)
	kubelet     map[string]any // KubeletConfiguration keys over the suite's defaults
	kubeletArgs []string       // extra kubelet flags
}

// startNode starts a pierd on a fresh root and a kubelet on it, and tears
// both down when the test ends: kubelet is stopped first (so that it does
// not restart what is removed), then pier removes every pod, pierd stops,
// and the cgroups, mounts and files kubelet made are removed.
func startNode(t *testing.T, opts nodeOptions) *node {
	t.Helper()
	dir := t.TempDir()
	pdir, kdir := filepath.Join(dir, "pier"), filepath.Join(dir, "kubelet")
	for _, d := range []string{pdir, kdir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	config := "" // top-level keys before the tables
	if cgroupDriver != "" {
		config += fmt.Sprintf("cgroup_driver = %q\n", cgroupDriver)
	}
	if runtimeHandler != "" {
		config += fmt.Sprintf("default_runtime = %q\n", runtimeHandler)
	}
	p, err := testenv.StartPierd(testenv.PierdOptions{Binary: pierdBin, Dir: pdir, Config: config + opts.pierConfig + "\n" + network.Config()})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{pierd: p, dir: dir}
	liveMu.Lock()
	liveNodes[n] = true
	liveMu.Unlock()
	t.Cleanup(func() { n.teardown(t) })
	n.kubelet, err = testenv.StartKubelet(testenv.KubeletOptions{
		Binary: kubeletBin, Dir: kdir, Endpoint: p.Endpoint(), NodeName: nodeName,
		CgroupRoot: cgroupRoot + "/" + strings.ReplaceAll(t.Name(), "/", "_"), SystemdCgroups: systemdCgroups(t, p),
		Config: opts.kubelet, Args: opts.kubeletArgs,
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// close stops kubelet, removes the pods through pier, stops pierd, and
// removes what kubelet left on the host; only once.
func (n *node) close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.kubelet != nil {
			if err := n.kubelet.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop kubelet: %w", err))
			}
		}
		if n.pierd.Pid() == 0 {
			// A test stopped it: start it again to remove the pods.
			if err := n.pierd.Start(); err != nil {
				errs = append(errs, fmt.Errorf("start pierd to remove the pods: %w", err))
			}
		}
		if err := n.pierd.RemovePods(); err != nil {
			errs = append(errs, fmt.Errorf("remove the pods: %w", err))
		}
		if err := n.pierd.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop pierd: %w", err))
		}
		if n.kubelet != nil {
			if err := n.kubelet.Cleanup(); err != nil {
				errs = append(errs, fmt.Errorf("clean up after kubelet: %w", err))
			}
		}
		liveMu.Lock()
		delete(liveNodes, n)
		liveMu.Unlock()
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// systemdCgroups reports whether pierd tells kubelet to use the systemd
// cgroup driver.
func systemdCgroups(t *testing.T, p *testenv.Pierd) bool {
	t.Helper()
	resp, err := p.Runtime.RuntimeConfig(ctx(t), &runtimeapi.RuntimeConfigRequest{})
	if err != nil {
		t.Fatalf("RuntimeConfig: %v", err)
	}
	return resp.GetLinux().GetCgroupDriver() == runtimeapi.CgroupDriver_SYSTEMD
}

// parallel runs the test beside the others, except with systemd cgroups,
// where every kubelet uses kubepods.slice: a kubelet removes the pod
// cgroups it does not know.
func parallel(t *testing.T) {
	_, err := os.Stat("/run/systemd/system") // systemd is init (sd_booted)
	if cgroupDriver == "cgroupfs" || cgroupDriver == "" && err != nil {
		t.Parallel()
	}
}

func (n *node) teardown(t *testing.T) {
	if err := n.close(); err != nil {
		t.Error(err)
	}
	if keep := os.Getenv("PIER_E2E_KEEP_LOGS"); keep != "" {
		dst := filepath.Join(keep, strings.ReplaceAll(t.Name(), "/", "_"))
		os.MkdirAll(dst, 0o755)
		copyFile(n.pierd.Log, filepath.Join(dst, "pierd.log"))
		if n.kubelet != nil {
			copyFile(n.kubelet.Log, filepath.Join(dst, "kubelet.log"))
		}
		t.Logf("logs kept in %s", dst)
	}
	if t.Failed() {
		t.Logf("pierd log (errors and warnings):\n%s", grepLines(n.pierd.LogText(), " level=error", " level=warning", "E1", "W1"))
		if n.kubelet != nil {
			t.Logf("kubelet log (last 150 lines):\n%s", n.kubelet.LogTail(150))
		}
	}
}

func copyFile(src, dst string) {
	if b, err := os.ReadFile(src); err == nil {
		os.WriteFile(dst, b, 0o644)
	}
}

// grepLines returns the lines of text that contain any of subs, at most the
// last 100.
func grepLines(text string, subs ...string) string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		for _, s := range subs {
			if strings.Contains(line, s) {
				out = append(out, line)
				break
			}
		}
	}
	if len(out) > 100 {
		out = out[len(out)-100:]
	}
	return strings.Join(out, "\n")
}

// ctx is the context of a call made once in a test: it ends with the test
// or after a minute.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// call calls f with a context that ends after a minute, for calls made in
// polling loops.
func call[T any](f func(context.Context) (T, error)) (T, error) {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f(c)
}

// pod returns the kubelet's view of the static pod of manifest name, failing
// the test when kubelet does not report it.
func (n *node) pod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	p, err := call(func(c context.Context) (*corev1.Pod, error) { return n.kubelet.Pod(c, name) })
	if err != nil {
		t.Fatal(err)
	}
	if p == nil {
		t.Fatalf("kubelet reports no pod %s", n.kubelet.PodName(name))
	}
	return p
}

// waitPod polls kubelet's /pods until check accepts the pod of manifest
// name, and returns it; after timeout it fails the test with check's last
// complaint and what kubelet reported.
func (n *node) waitPod(t *testing.T, name string, timeout time.Duration, check func(*corev1.Pod) error) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		p, err := call(func(c context.Context) (*corev1.Pod, error) { return n.kubelet.Pod(c, name) })
		if err == nil && p == nil {
			err = fmt.Errorf("kubelet reports no pod %s", n.kubelet.PodName(name))
		}
		if err == nil {
			if err = check(p); err == nil {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s after %s: %v\nkubelet reports:\n%s", name, timeout, err, describe(p))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// describe sums up a pod's status as kubelet reports it.
func describe(p *corev1.Pod) string {
	if p == nil {
		return "  (no pod)"
	}
	var b strings.Builder
	s := p.Status
	fmt.Fprintf(&b, "  pod %s uid %s: phase %s reason %q message %q podIP %s\n", p.Name, p.UID, s.Phase, s.Reason, s.Message, s.PodIP)
	for _, c := range s.Conditions {
		fmt.Fprintf(&b, "  condition %s=%s %s %s\n", c.Type, c.Status, c.Reason, c.Message)
	}
	for _, list := range []struct {
		kind string
		cs   []corev1.ContainerStatus
	}{{"init", s.InitContainerStatuses}, {"container", s.ContainerStatuses}} {
		for _, c := range list.cs {
			fmt.Fprintf(&b, "  %s %s: ready=%v started=%v restarts=%d id=%s state=%s last=%s\n", list.kind, c.Name, c.Ready,
				c.Started != nil && *c.Started, c.RestartCount, c.ContainerID, stateString(c.State), stateString(c.LastTerminationState))
		}
	}
	return b.String()
}

func stateString(s corev1.ContainerState) string {
	switch {
	case s.Waiting != nil:
		return fmt.Sprintf("waiting(%s: %s)", s.Waiting.Reason, s.Waiting.Message)
	case s.Running != nil:
		return fmt.Sprintf("running(since %s)", s.Running.StartedAt.Format(time.RFC3339))
	case s.Terminated != nil:
		return fmt.Sprintf("terminated(exit %d, signal %d, reason %s, message %q)", s.Terminated.ExitCode, s.Terminated.Signal, s.Terminated.Reason, s.Terminated.Message)
	}
	return "none"
}

// status is the status of the (init or app) container name of pod p, or nil.
func status(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for _, list := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

// running checks that the pod is Running and that each named container
// runs (all of the pod's app containers when none is named).
func running(names ...string) func(*corev1.Pod) error {
	return func(p *corev1.Pod) error {
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("phase %s, want Running", p.Status.Phase)
		}
		if len(names) == 0 {
			for _, c := range p.Spec.Containers {
				names = append(names, c.Name)
			}
		}
		for _, name := range names {
			c := status(p, name)
			if c == nil || c.State.Running == nil {
				return fmt.Errorf("container %s is not running", name)
			}
		}
		return nil
	}
}

// condition is the status of the pod's condition typ ("" when unset).
func condition(p *corev1.Pod, typ corev1.PodConditionType) corev1.ConditionStatus {
	for _, c := range p.Status.Conditions {
		if c.Type == typ {
			return c.Status
		}
	}
	return ""
}

// containerID strips the runtime's scheme from a container status's ID.
func containerID(c *corev1.ContainerStatus) string {
	_, id, _ := strings.Cut(c.ContainerID, "://")
	return id
}

// readOutput waits until the pod's emptyDir volume holds the file done
// and returns the volume's directory.
func (n *node) readOutput(t *testing.T, p *corev1.Pod, volume string, timeout time.Duration) string {
	t.Helper()
	dir := n.kubelet.EmptyDir(string(p.UID), volume)
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
			return dir
		}
		if time.Now().After(deadline) {
			entries, _ := os.ReadDir(dir)
			t.Fatalf("the pod's containers wrote no %s/done in %s (the volume holds %v)\nkubelet reports:\n%s", dir, timeout, entries, describe(n.pod(t, strings.TrimSuffix(p.Name, "-"+nodeName))))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// criPod lists pier's containers of the pod whose kubelet name is
// podName, and its sandboxes.
func (n *node) criPod(t *testing.T, podName string) ([]*runtimeapi.Container, []*runtimeapi.PodSandbox) {
	t.Helper()
	labels := map[string]string{"io.kubernetes.pod.name": podName}
	cs, err := call(func(c context.Context) (*runtimeapi.ListContainersResponse, error) {
		return n.pierd.Runtime.ListContainers(c, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{LabelSelector: labels}})
	})
	if err != nil {
		t.Fatalf("ListContainers: %v", err)
	}
	ss, err := call(func(c context.Context) (*runtimeapi.ListPodSandboxResponse, error) {
		return n.pierd.Runtime.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: labels}})
	})
	if err != nil {
		t.Fatalf("ListPodSandbox: %v", err)
	}
	return cs.Containers, ss.Items
}

// containerPids returns the host pids of the processes in the container's
// cgroup, the container's init (whose parent is outside it) first.
func containerPids(id string) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	in := map[int]bool{}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			// .../<id>, .../pier-<id>.scope, .../<scope>/container (crun)
			if strings.Contains(line, id) {
				in[pid] = true
				pids = append(pids, pid)
				break
			}
		}
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no process of container %s on the host", id)
	}
	// The init is the oldest live process whose parent is outside the
	// container: a process an exec probe started has its parent outside
	// too (and may be gone by now), and /proc lists pids in string order
	// (10000 before 9999).
	init, initStart := -1, uint64(0)
	for i, pid := range pids {
		parent, start := stat(pid)
		if parent == 0 {
			continue // gone since: a probe's process
		}
		if !in[parent] && (init < 0 || start < initStart) {
			init, initStart = i, start
		}
	}
	if init < 0 {
		return nil, fmt.Errorf("container %s has no init process (pids %v)", id, pids)
	}
	pids[0], pids[init] = pids[init], pids[0]
	return pids, nil
}

// stat reads the parent and the start time (in clock ticks after boot) of
// process pid; 0, 0 if unknown.
func stat(pid int) (ppid int, start uint64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses;
	// starttime is field 22, the 20th after comm.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0
	}
	ppid, _ = strconv.Atoi(f[1])
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return ppid, start
}
