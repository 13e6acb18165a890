package installer

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A node as the tests fake it: a host root (a directory), its systemd,
// its runtimes and its API server, consistent with each other (the
// kubelet, when started, reports the runtime its configuration names).
type fakeNode struct {
	t       *testing.T
	root    string
	mu      sync.Mutex
	calls   []string
	active  map[string]bool
	enabled map[string]bool
	pods    map[string]int // pods per CRI endpoint
	taints  []string
	labels  map[string]string
	runtime string // what the kubelet reports, set when it starts
	// pierBroken: a kubelet pointed at pier never comes up.
	pierBroken bool
}

const containerdEndpoint = "unix:///var/run/containerd/containerd.sock"

const kubeletConfig = `# kubeadm's kubelet configuration
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd # the node's driver
containerRuntimeEndpoint: ` + containerdEndpoint + `
staticPodPath: /etc/kubernetes/manifests
`

const kubeadmFlags = `KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=` + containerdEndpoint + ` --pod-infra-container-image=registry.k8s.io/pause:3.10"
`

// newNode makes a host root with a kubeadm kubelet on containerd, an
// operator's pier config, an old pierd in /usr/local/bin, the host's own
// runc, and /var/run as the absolute symbolic link most hosts have.
func newNode(t *testing.T) *fakeNode {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"/var/lib/kubelet/config.yaml":       kubeletConfig,
		"/var/lib/kubelet/kubeadm-flags.env": kubeadmFlags,
		"/etc/pier/config.toml":              "# the operator's\nlog_verbosity = 2\n",
		"/usr/local/bin/pierd":               "old pierd",
		"/usr/bin/runc":                      "the host's runc",
		"/run/systemd/private":               "",
	}
	for p, c := range files {
		mustWrite(t, filepath.Join(root, p), c, 0o755)
	}
	for _, d := range []string{"/etc/cni/net.d", "/opt/cni/bin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/run", filepath.Join(root, "var/run")); err != nil {
		t.Fatal(err)
	}
	n := &fakeNode{t: t, root: root, active: map[string]bool{"kubelet.service": true}, enabled: map[string]bool{},
		pods: map[string]int{containerdEndpoint: 3}, labels: map[string]string{}, runtime: "containerd://1.6.20"}
	return n
}

func mustWrite(t *testing.T, p, content string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}

// payload makes the image's tree: pier's binaries, runc, crun, two CNI
// plugins, the unit and the CNI configuration of this repository.
func payload(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []string{"pierd", "pier-shim", "pier-shim-monitor", "runc", "crun"} {
		mustWrite(t, filepath.Join(dir, "bin", b), "new "+b, 0o755)
	}
	for _, b := range []string{"bridge", "loopback"} {
		mustWrite(t, filepath.Join(dir, "cni", "bin", b), b, 0o755)
	}
	for src, dst := range map[string]string{"../deploy/pier.service": "share/pier.service", "../deploy/cni/10-pier.conflist": "share/10-pier.conflist"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(dir, dst), string(b), 0o644)
	}
	mustWrite(t, filepath.Join(dir, "self"), "pier-install", 0o755)
	return dir
}

func (n *fakeNode) call(s string) {
	n.mu.Lock()
	n.calls = append(n.calls, s)
	n.mu.Unlock()
}

// Systemd.
func (n *fakeNode) Reload(ctx context.Context) error { n.call("daemon-reload"); return nil }
func (n *fakeNode) Enable(ctx context.Context, u string) error {
	n.call("enable " + u)
	n.enabled[u] = true
	return nil
}
func (n *fakeNode) Disable(ctx context.Context, u string) error {
	n.call("disable " + u)
	delete(n.enabled, u)
	return nil
}
func (n *fakeNode) Start(ctx context.Context, u string) error {
	if n.active[u] {
		return nil
	}
	n.call("start " + u)
	return n.started(u)
}
func (n *fakeNode) Restart(ctx context.Context, u string) error {
	n.call("restart " + u)
	return n.started(u)
}
func (n *fakeNode) Stop(ctx context.Context, u string) error {
	if n.active[u] {
		n.call("stop " + u)
	}
	n.active[u] = false
	if u == "kubelet.service" {
		n.runtime = ""
	}
	return nil
}

// started: the kubelet reports the runtime its files name.
func (n *fakeNode) started(u string) error {
	if u == "pier.service" && !n.exists(unitFile) {
		return fmt.Errorf("unit %s not found", u)
	}
	n.active[u] = true
	if u == "kubelet.service" {
		e, err := kubeletFiles{Config: "/var/lib/kubelet/config.yaml", Flags: "/var/lib/kubelet/kubeadm-flags.env"}.read(&host{root: n.root})
		if err != nil {
			return err
		}
		n.runtime = "containerd://1.6.20"
		if (&host{root: n.root}).same(e.Runtime(), PierEndpoint) {
			n.runtime = "pier://0.1.0"
			if n.pierBroken {
				n.runtime = ""
			}
		}
	}
	return nil
}

func (n *fakeNode) exists(p string) bool { return (&host{root: n.root}).exists(p) }

func (n *fakeNode) RunOnHost(ctx context.Context, unit string, argv []string) error {
	n.call("run " + strings.Join(argv[1:], " "))
	if !n.exists(argv[0]) {
		return fmt.Errorf("%s: no such file", argv[0])
	}
	if len(argv) != 4 || argv[1] != "kubelet-apply" {
		return fmt.Errorf("unexpected %v", argv)
	}
	return KubeletApply(ctx, n.root, argv[3], n, func(string, ...any) {})
}

// Runtimes.
func (n *fakeNode) Ready(ctx context.Context, endpoint string) (string, []string, error) {
	switch {
	case endpoint == PierEndpoint && n.active["pier.service"]:
		return "pier://0.1.0", []string{"runc", "crun"}, nil
	case endpoint == containerdEndpoint:
		return "containerd://1.6.20", []string{"runc"}, nil
	}
	return "", nil, fmt.Errorf("nothing serves %s", endpoint)
}
func (n *fakeNode) RemovePods(ctx context.Context, endpoint string) (int, error) {
	c := n.pods[endpoint]
	if c > 0 {
		n.call(fmt.Sprintf("remove %d pods of %s", c, endpoint))
	}
	n.pods[endpoint] = 0
	return c, nil
}

func (n *fakeNode) Pods(ctx context.Context, endpoint string) (int, error) {
	if (endpoint == PierEndpoint && strings.HasPrefix(n.runtime, "pier://")) || (endpoint == containerdEndpoint && strings.HasPrefix(n.runtime, "containerd://")) {
		return n.pods[endpoint] + 1, nil // the kubelet's static pods
	}
	return n.pods[endpoint], nil
}

// Cluster.
func (n *fakeNode) SetTaint(ctx context.Context, node string, on bool) error {
	i := slices.Index(n.taints, TaintSwitching)
	if on && i < 0 {
		n.call("taint")
		n.taints = append(n.taints, TaintSwitching)
	}
	if !on && i >= 0 {
		n.call("untaint")
		n.taints = slices.Delete(n.taints, i, i+1)
	}
	return nil
}
func (n *fakeNode) SetLabel(ctx context.Context, node, key, value string) error {
	if value != "" {
		n.labels[key] = value
	} else {
		delete(n.labels, key)
	}
	return nil
}
func (n *fakeNode) Runtime(ctx context.Context, node string) (string, []string, bool, error) {
	return n.runtime, nil, n.runtime != "", nil
}

var errKilled = errors.New("killed")

// installer returns an installer of this node; configDir holds chart
// drop-ins ("" for none); killAt names a step to stop before.
func (n *fakeNode) installer(pl, configDir, killAt string, steps *[]string) *Installer {
	return New(Options{
		HostRoot: n.root, Payload: pl, ConfigDir: configDir, Self: filepath.Join(pl, "self"),
		SwitchKubelet: true, KubeletConfig: "/var/lib/kubelet/config.yaml", KubeletFlags: "/var/lib/kubelet/kubeadm-flags.env",
		KubeletUnit: "kubelet.service", NodeName: "node-1",
		Systemd: n, Cluster: n, Runtimes: n,
		Probe: func(ctx context.Context, p string) error {
			if filepath.Base(p) == "crun" {
				return errors.New("error while loading shared libraries: libyajl.so.2")
			}
			return nil
		},
		Log: n.t.Logf,
		BeforeStep: func(s string) error {
			if steps != nil {
				*steps = append(*steps, s)
			}
			if s == killAt {
				return errKilled
			}
			return nil
		},
	})
}

// snapshot lists every file of root with its mode and content (or link
// target), the installer's state directory excluded unless withState.
func snapshot(t *testing.T, root string, withState bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, root)
		if !withState && strings.HasPrefix(rel, StateDir) {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			out[rel] = "link " + l
		case fi.IsDir():
			out[rel] = fmt.Sprintf("dir %v", fi.Mode().Perm())
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = fmt.Sprintf("%v %x", fi.Mode().Perm(), sha256.Sum256(b))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diff(a, b map[string]string) string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok {
			d = append(d, "- "+k)
		} else if w != v {
			d = append(d, "~ "+k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, "+ "+k)
		}
	}
	slices.Sort(d)
	return strings.Join(d, "\n")
}

func read(t *testing.T, n *fakeNode, p string) string {
	t.Helper()
	b, err := os.ReadFile((&host{root: n.root}).path(p))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestInstallSwitchesAndUninstallRestores(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	pl := payload(t)
	chart := t.TempDir()
	mustWrite(t, filepath.Join(chart, "50-helm.toml"), "cgroup_driver = \"systemd\"\n", 0o644)
	before := snapshot(t, n.root, true)

	if err := n.installer(pl, chart, "", nil).Install(ctx); err != nil {
		t.Fatal(err)
	}
	// Files: pier's binaries, the runtimes the host lacks, the unit, the
	// drop-ins; the operator's config.toml untouched.
	for p, want := range map[string]string{
		"/usr/local/bin/pierd":             "new pierd",
		"/usr/local/bin/pier-shim-monitor": "new pier-shim-monitor",
		"/opt/pier/bin/crun":               "new crun",
		"/opt/pier/cni/bin/bridge":         "bridge",
		"/etc/pier/config.toml":            "# the operator's\nlog_verbosity = 2\n",
		"/etc/pier/config.d/50-helm.toml":  "cgroup_driver = \"systemd\"\n",
		"/usr/bin/runc":                    "the host's runc",
	} {
		if got := read(t, n, p); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if n.exists("/opt/pier/bin/runc") {
		t.Error("the image's runc was installed on a host that has its own")
	}
	gen := read(t, n, genDropIn)
	if strings.Contains(gen, "runtimes.crun") || strings.Contains(gen, "runtimes.runc") || !strings.Contains(gen, `"/opt/pier/cni/bin"`) {
		t.Errorf("generated drop-in: runc is the host's, crun does not run here, plugins are in /opt/pier/cni/bin:\n%s", gen)
	}
	if !n.exists("/etc/cni/net.d/10-pier.conflist") {
		t.Error("no pod network installed on a node without one")
	}
	// The kubelet: switched in both files, comments and other keys kept.
	cfg := read(t, n, "/var/lib/kubelet/config.yaml")
	for _, want := range []string{"containerRuntimeEndpoint: " + PierEndpoint, "# kubeadm's kubelet configuration", "cgroupDriver: systemd # the node's driver", "staticPodPath: /etc/kubernetes/manifests"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("kubelet config lacks %q:\n%s", want, cfg)
		}
	}
	if flags := read(t, n, "/var/lib/kubelet/kubeadm-flags.env"); !strings.Contains(flags, "--container-runtime-endpoint="+PierEndpoint+" --pod-infra") {
		t.Errorf("kubeadm flags not switched: %s", flags)
	}
	wantCalls := []string{"daemon-reload", "enable pier.service", "restart pier.service", "taint",
		"run kubelet-apply --request " + requestFile, "stop kubelet.service", "start kubelet.service",
		"untaint", "remove 3 pods of " + containerdEndpoint}
	if !slices.Equal(n.calls, wantCalls) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(n.calls, "\n"), strings.Join(wantCalls, "\n"))
	}
	if n.runtime != "pier://0.1.0" || n.labels[LabelInstalled] != "true" || n.labels[LabelRuntime] != "pier" || len(n.taints) != 0 {
		t.Errorf("node: runtime %q, labels %v, taints %v", n.runtime, n.labels, n.taints)
	}
	if ok, err := n.installer(pl, chart, "", nil).Installed(); !ok || err != nil {
		t.Errorf("Installed = %v, %v", ok, err)
	}
	if fi, err := os.Stat(filepath.Join(n.root, StateDir, "state.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v %v, want mode 0600", fi.Mode(), err)
	}

	// Again (the pod restarted): nothing changes, nothing restarts.
	installed := snapshot(t, n.root, false)
	n.calls = nil
	if err := n.installer(pl, chart, "", nil).Install(ctx); err != nil {
		t.Fatal(err)
	}
	if d := diff(installed, snapshot(t, n.root, false)); d != "" || !slices.Equal(n.calls, []string{"daemon-reload", "enable pier.service"}) {
		t.Errorf("a second install changed files:\n%s\nor called %v", d, n.calls)
	}

	// A new release without the chart's drop-in and a new pierd: the
	// drop-in goes, pier restarts.
	os.Remove(filepath.Join(chart, "50-helm.toml"))
	mustWrite(t, filepath.Join(pl, "bin", "pierd"), "newer pierd", 0o755)
	n.calls = nil
	if err := n.installer(pl, chart, "", nil).Install(ctx); err != nil {
		t.Fatal(err)
	}
	if n.exists("/etc/pier/config.d/50-helm.toml") || read(t, n, "/usr/local/bin/pierd") != "newer pierd" || !slices.Contains(n.calls, "restart pier.service") {
		t.Errorf("upgrade: drop-in kept %v, pierd %q, calls %v", n.exists("/etc/pier/config.d/50-helm.toml"), read(t, n, "/usr/local/bin/pierd"), n.calls)
	}
	if slices.Contains(n.calls, "stop kubelet.service") {
		t.Errorf("upgrade restarted the kubelet: %v", n.calls)
	}

	// Uninstall: the kubelet back on containerd, pier's pods removed, the
	// root as it was.
	n.pods[PierEndpoint] = 2
	n.calls = nil
	if err := n.installer(pl, chart, "", nil).Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	if d := diff(before, snapshot(t, n.root, true)); d != "" {
		t.Errorf("uninstall left the root changed:\n%s", d)
	}
	wantCalls = []string{"taint", "run kubelet-apply --request " + requestFile, "stop kubelet.service", "start kubelet.service",
		"untaint", "remove 2 pods of " + PierEndpoint, "stop pier.service", "disable pier.service", "daemon-reload"}
	if !slices.Equal(n.calls, wantCalls) {
		t.Errorf("uninstall calls:\n%s\nwant:\n%s", strings.Join(n.calls, "\n"), strings.Join(wantCalls, "\n"))
	}
	if n.runtime != "containerd://1.6.20" || len(n.labels) != 0 || len(n.taints) != 0 {
		t.Errorf("node: runtime %q, labels %v, taints %v", n.runtime, n.labels, n.taints)
	}
	// Uninstalling again is harmless.
	if err := n.installer(pl, chart, "", nil).Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestResumesAfterKillAtEachStep kills the installer before each step of
// install and of uninstall, runs a fresh one, and checks it ends where an
// uninterrupted run ends: the same files, the kubelet on the same runtime,
// and after uninstall the root as it was.
func TestResumesAfterKillAtEachStep(t *testing.T) {
	ctx := context.Background()
	pl := payload(t)
	ref := newNode(t)
	before := snapshot(t, ref.root, true)
	var installSteps, uninstallSteps []string
	if err := ref.installer(pl, "", "", &installSteps).Install(ctx); err != nil {
		t.Fatal(err)
	}
	installed := snapshot(t, ref.root, false)
	if err := ref.installer(pl, "", "", &uninstallSteps).Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	if len(installSteps) < 8 || len(uninstallSteps) < 8 {
		t.Fatalf("steps: install %v, uninstall %v", installSteps, uninstallSteps)
	}
	for _, step := range installSteps {
		t.Run("install/"+step, func(t *testing.T) {
			n := newNode(t)
			if err := n.installer(pl, "", step, nil).Install(ctx); !errors.Is(err, errKilled) {
				t.Fatalf("not killed at %s: %v", step, err)
			}
			if err := n.installer(pl, "", "", nil).Install(ctx); err != nil {
				t.Fatal(err)
			}
			if d := diff(installed, snapshot(t, n.root, false)); d != "" {
				t.Errorf("resumed install differs:\n%s", d)
			}
			if n.runtime != "pier://0.1.0" || len(n.taints) != 0 || n.pods[containerdEndpoint] != 0 {
				t.Errorf("node: runtime %q, taints %v, pods left %v", n.runtime, n.taints, n.pods)
			}
			if err := n.installer(pl, "", "", nil).Uninstall(ctx); err != nil {
				t.Fatal(err)
			}
			if d := diff(before, snapshot(t, n.root, true)); d != "" {
				t.Errorf("uninstall after a resumed install left:\n%s", d)
			}
		})
	}
	for _, step := range uninstallSteps {
		t.Run("uninstall/"+step, func(t *testing.T) {
			n := newNode(t)
			if err := n.installer(pl, "", "", nil).Install(ctx); err != nil {
				t.Fatal(err)
			}
			if err := n.installer(pl, "", step, nil).Uninstall(ctx); !errors.Is(err, errKilled) {
				t.Fatalf("not killed at %s: %v", step, err)
			}
			if err := n.installer(pl, "", "", nil).Uninstall(ctx); err != nil {
				t.Fatal(err)
			}
			if d := diff(before, snapshot(t, n.root, true)); d != "" {
				t.Errorf("resumed uninstall left:\n%s", d)
			}
			if n.runtime != "containerd://1.6.20" || len(n.taints) != 0 || n.active["pier.service"] {
				t.Errorf("node: runtime %q, taints %v, pier active %v", n.runtime, n.taints, n.active["pier.service"])
			}
		})
	}
	// A kill half-way through uninstall, then install again: pier comes
	// back whole.
	t.Run("uninstall-then-install", func(t *testing.T) {
		n := newNode(t)
		if err := n.installer(pl, "", "", nil).Install(ctx); err != nil {
			t.Fatal(err)
		}
		if err := n.installer(pl, "", "files", nil).Uninstall(ctx); !errors.Is(err, errKilled) {
			t.Fatal(err)
		}
		if err := n.installer(pl, "", "", nil).Install(ctx); err != nil {
			t.Fatal(err)
		}
		if d := diff(installed, snapshot(t, n.root, false)); d != "" {
			t.Errorf("install after a half uninstall differs:\n%s", d)
		}
		if n.runtime != "pier://0.1.0" || !n.active["pier.service"] {
			t.Errorf("runtime %q, pier active %v", n.runtime, n.active["pier.service"])
		}
	})
}

// TestReleaseTurnsTheSwitchOff: a release without kubelet.switch moves the
// kubelet back and keeps pier; turning it on again moves it once more.
func TestReleaseTurnsTheSwitchOff(t *testing.T) {
	ctx := context.Background()
	n := newNode(t)
	pl := payload(t)
	if err := n.installer(pl, "", "", nil).Install(ctx); err != nil {
		t.Fatal(err)
	}
	off := n.installer(pl, "", "", nil)
	off.o.SwitchKubelet = false
	n.pods[PierEndpoint] = 1
	if err := off.Install(ctx); err != nil {
		t.Fatal(err)
	}
	if n.runtime != "containerd://1.6.20" || !n.active["pier.service"] || n.pods[PierEndpoint] != 0 || len(n.taints) != 0 {
		t.Errorf("switch off: runtime %q, pier active %v, pods on pier %d, taints %v", n.runtime, n.active["pier.service"], n.pods[PierEndpoint], n.taints)
	}
	if n.labels[LabelInstalled] != "true" || n.labels[LabelRuntime] != "" {
		t.Errorf("switch off: labels %v, want installed and no runtime label", n.labels)
	}
	if cfg := read(t, n, "/var/lib/kubelet/config.yaml"); cfg != kubeletConfig {
		t.Errorf("kubelet config after the switch back:\n%s\nwant:\n%s", cfg, kubeletConfig)
	}
	n.calls = nil
	if err := n.installer(pl, "", "", nil).Install(ctx); err != nil {
		t.Fatal(err)
	}
	if n.runtime != "pier://0.1.0" || !slices.Contains(n.calls, "stop kubelet.service") {
		t.Errorf("switch on again: runtime %q, calls %v", n.runtime, n.calls)
	}
	// A kubelet already on pier before the installer: nothing to move,
	// and above all no pod of pier removed.
	m := newNode(t)
	mustWrite(t, filepath.Join(m.root, "var/lib/kubelet/config.yaml"), strings.ReplaceAll(kubeletConfig, containerdEndpoint, PierEndpoint), 0o644)
	mustWrite(t, filepath.Join(m.root, "var/lib/kubelet/kubeadm-flags.env"), strings.ReplaceAll(kubeadmFlags, containerdEndpoint, PierEndpoint), 0o644)
	m.pods[PierEndpoint] = 4
	if err := m.installer(pl, "", "", nil).Install(ctx); err != nil {
		t.Fatal(err)
	}
	if m.pods[PierEndpoint] != 4 || slices.Contains(m.calls, "stop kubelet.service") {
		t.Errorf("kubelet already on pier: pods %d, calls %v", m.pods[PierEndpoint], m.calls)
	}
}

// TestReviewCases: the cases a review of the installer found.
func TestReviewCases(t *testing.T) {
	ctx := context.Background()
	pl := payload(t)

	t.Run("kubelet on pier by another name", func(t *testing.T) {
		n := newNode(t)
		// /var/run is /run: this is pier's socket.
		mustWrite(t, filepath.Join(n.root, "var/lib/kubelet/config.yaml"), strings.ReplaceAll(kubeletConfig, containerdEndpoint, "unix:///var/run/pier/pier.sock"), 0o644)
		mustWrite(t, filepath.Join(n.root, "var/lib/kubelet/kubeadm-flags.env"), "KUBELET_KUBEADM_ARGS=\"\"\n", 0o644)
		n.pods[PierEndpoint] = 4
		if err := n.installer(pl, "", "", nil).Install(ctx); err != nil {
			t.Fatal(err)
		}
		if n.pods[PierEndpoint] != 4 || slices.Contains(n.calls, "stop kubelet.service") || n.labels[LabelRuntime] != "pier" {
			t.Errorf("pods on pier %d, calls %v, labels %v", n.pods[PierEndpoint], n.calls, n.labels)
		}
		// Uninstall would stop every pod of a node whose kubelet is on pier.
		err := n.installer(pl, "", "", nil).Uninstall(ctx)
		if err == nil || !strings.Contains(err.Error(), "point it at another runtime first") || n.pods[PierEndpoint] != 4 || !n.active["pier.service"] {
			t.Errorf("uninstall: %v; pods on pier %d, pier active %v", err, n.pods[PierEndpoint], n.active["pier.service"])
		}
	})

	t.Run("config.toml the installer wrote, then edited", func(t *testing.T) {
		n := newNode(t)
		os.Remove(filepath.Join(n.root, "etc/pier/config.toml"))
		if err := n.installer(pl, "", "", nil).Install(ctx); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(n.root, "etc/pier/config.toml"), "log_verbosity = 4\n", 0o644)
		for _, run := range []func(*Installer) error{func(i *Installer) error { return i.Install(ctx) }, func(i *Installer) error { return i.Uninstall(ctx) }} {
			if err := run(n.installer(pl, "", "", nil)); err != nil {
				t.Fatal(err)
			}
			if got := read(t, n, "/etc/pier/config.toml"); got != "log_verbosity = 4\n" {
				t.Errorf("the edited config.toml became %q", got)
			}
		}
	})

	t.Run("an operator's drop-in of the chart's name", func(t *testing.T) {
		n := newNode(t)
		mustWrite(t, filepath.Join(n.root, "etc/pier/config.d/50-helm.toml"), "# the operator's\n", 0o600)
		chart := t.TempDir()
		mustWrite(t, filepath.Join(chart, "50-helm.toml"), "cgroup_driver = \"systemd\"\n", 0o644)
		if err := n.installer(pl, chart, "", nil).Install(ctx); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(chart, "50-helm.toml"))
		if err := n.installer(pl, chart, "", nil).Install(ctx); err != nil {
			t.Fatal(err)
		}
		if got := read(t, n, "/etc/pier/config.d/50-helm.toml"); got != "# the operator's\n" {
			t.Errorf("a release without the drop-in left %q, want the operator's file back", got)
		}
	})

	t.Run("unquoted kubeadm flags", func(t *testing.T) {
		n := newNode(t)
		mustWrite(t, filepath.Join(n.root, "var/lib/kubelet/kubeadm-flags.env"), "KUBELET_KUBEADM_ARGS=--container-runtime-endpoint="+containerdEndpoint+" --v=2\n", 0o644)
		if err := n.installer(pl, "", "", nil).Install(ctx); err != nil {
			t.Fatal(err)
		}
		if got := read(t, n, "/var/lib/kubelet/kubeadm-flags.env"); got != "KUBELET_KUBEADM_ARGS=--container-runtime-endpoint="+PierEndpoint+" --v=2\n" {
			t.Errorf("flags: %q", got)
		}
		if err := n.installer(pl, "", "", nil).Uninstall(ctx); err != nil {
			t.Fatal(err)
		}
		if got := read(t, n, "/var/lib/kubelet/kubeadm-flags.env"); got != "KUBELET_KUBEADM_ARGS=--container-runtime-endpoint="+containerdEndpoint+" --v=2\n" {
			t.Errorf("flags after uninstall: %q", got)
		}
	})

	t.Run("kubelet config: a comment on the value, and two documents", func(t *testing.T) {
		n := newNode(t)
		cfg := strings.Replace(kubeletConfig, containerdEndpoint, containerdEndpoint+" # the runtime", 1)
		mustWrite(t, filepath.Join(n.root, "var/lib/kubelet/config.yaml"), cfg, 0o644)
		if err := n.installer(pl, "", "", nil).Install(ctx); err != nil {
			t.Fatal(err)
		}
		if got := read(t, n, "/var/lib/kubelet/config.yaml"); !strings.Contains(got, PierEndpoint+" # the runtime") {
			t.Errorf("the value's comment is gone:\n%s", got)
		}
		m := newNode(t)
		mustWrite(t, filepath.Join(m.root, "var/lib/kubelet/config.yaml"), kubeletConfig+"---\nkind: Other\n", 0o644)
		err := m.installer(pl, "", "", nil).Install(ctx)
		if err == nil || !strings.Contains(err.Error(), "more than one YAML document") || read(t, m, "/var/lib/kubelet/config.yaml") != kubeletConfig+"---\nkind: Other\n" {
			t.Errorf("two documents: %v", err)
		}
	})

	t.Run("a kubelet that does not come up on pier goes back", func(t *testing.T) {
		n := newNode(t)
		n.pierBroken = true
		in := n.installer(pl, "", "", nil)
		in.o.Timeout = 2 * time.Second
		err := in.Install(ctx)
		if err == nil || !strings.Contains(err.Error(), "did not report") {
			t.Fatalf("err = %v", err)
		}
		if n.runtime != "containerd://1.6.20" || len(n.taints) != 0 || n.pods[containerdEndpoint] != 3 || read(t, n, "/var/lib/kubelet/config.yaml") != kubeletConfig {
			t.Errorf("after the rollback: runtime %q, taints %v, pods on containerd %d", n.runtime, n.taints, n.pods[containerdEndpoint])
		}
		// Fixed, the next try switches.
		n.pierBroken = false
		if err := n.installer(pl, "", "", nil).Install(ctx); err != nil {
			t.Fatal(err)
		}
		if n.runtime != "pier://0.1.0" {
			t.Errorf("runtime %q after the retry", n.runtime)
		}
	})
}
