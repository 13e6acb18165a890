package testenv

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/pier-runtime/pier/internal/mountinfo"
)

// KubeletVersion is the kubelet the end-to-end suite runs.
const KubeletVersion = "v1.37.2"

// KubeletCacheDir holds built kubelet binaries between runs.
const KubeletCacheDir = "/var/cache/pier-e2e"

// EnsureKubelet returns the path of a kubelet binary of KubeletVersion:
// $PIER_KUBELET, or KubeletCacheDir/kubelet-<version>. When the binary is
// missing or reports another version it is built there by script (the
// project's build step, which takes several minutes), with its output in
// log.
func EnsureKubelet(script string, log io.Writer) (string, error) {
	bin := os.Getenv("PIER_KUBELET")
	if bin == "" {
		bin = filepath.Join(KubeletCacheDir, "kubelet-"+KubeletVersion)
	}
	if KubeletBinaryVersion(bin) == KubeletVersion {
		return bin, nil
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	cmd := exec.Command("bash", script)
	cmd.Env = append(os.Environ(), "OUT="+bin, "KUBE_VERSION="+KubeletVersion,
		"BUILD_DIR="+filepath.Join(filepath.Dir(bin), "kubelet-build"))
	cmd.Stdout, cmd.Stderr = log, log
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build kubelet %s with %s: %w", KubeletVersion, script, err)
	}
	if v := KubeletBinaryVersion(bin); v != KubeletVersion {
		return "", fmt.Errorf("%s built by %s reports version %q, want %s", bin, script, v, KubeletVersion)
	}
	fmt.Fprintf(log, "built kubelet %s in %s\n", bin, time.Since(start).Round(time.Second))
	return bin, nil
}

// KubeletBinaryVersion is what `bin --version` reports ("v1.37.2"), or "".
func KubeletBinaryVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return ""
	}
	v, _ := strings.CutPrefix(strings.TrimSpace(string(out)), "Kubernetes ")
	return v
}

// KubeletOptions say how to start a standalone kubelet.
type KubeletOptions struct {
	Binary     string // path of the kubelet binary
	Dir        string // holds everything the kubelet writes; reuse it to restart
	Endpoint   string // the CRI endpoint (runtime and image service)
	NodeName   string // --hostname-override
	CgroupRoot string // cgroupRoot, e.g. "/pier-e2e-kubelet"; made in every hierarchy
	// SystemdCgroups says the runtime uses the systemd cgroup driver (which
	// kubelet takes from it): CgroupRoot is then "/", and the pods' slices
	// are under kubepods.slice.
	SystemdCgroups bool
	// Config is merged over the KubeletConfiguration the suite uses (top-level
	// keys replace the defaults').
	Config map[string]any
	Args   []string // extra command-line flags
}

// Kubelet is a kubelet process in standalone mode: no API server, static
// pods from a manifest directory, its own root directory, and its servers
// on free ports of 127.0.0.1.
type Kubelet struct {
	Dir          string // config.json, root/, manifests/, pod-logs/, kubelet.log
	RootDir      string // --root-dir
	ManifestDir  string // staticPodPath
	PodLogsDir   string // podLogsDir
	ResolvConf   string // the resolv.conf kubelet gives pods
	Log          string // kubelet's stderr
	ReadOnlyPort int    // serves /pods without authentication

	opts KubeletOptions
	cmd  *exec.Cmd
	exit chan error
}

// kernelTunables are the sysctls kubelet sets at start-up (without
// protectKernelDefaults).
var kernelTunables = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

// hostDirs are directories kubelet makes outside its root directory
// whatever its configuration says.
var hostDirs = []string{"/var/log/containers", "/var/lib/kubelet"}

// SaveKubeletHost records what every kubelet changes on the host whatever
// its configuration (the kernel settings it sets, the directories it makes
// outside its root directory), and returns the function that puts the host
// back as it was: call it once every kubelet has stopped.
func SaveKubeletHost() (restore func() error, err error) {
	sysctls := map[string]string{}
	for _, s := range kernelTunables {
		b, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			return nil, err
		}
		sysctls[s] = strings.TrimSpace(string(b))
	}
	var created []string
	for _, d := range hostDirs {
		if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
			created = append(created, d)
		}
	}
	return func() error {
		var errs []error
		for _, d := range created {
			if err := os.RemoveAll(d); err != nil {
				errs = append(errs, err)
			}
		}
		for s, v := range sysctls {
			if err := os.WriteFile("/proc/sys/"+s, []byte(v), 0o644); err != nil {
				errs = append(errs, fmt.Errorf("restore %s: %w", s, err))
			}
		}
		return errors.Join(errs...)
	}, nil
}

// StartKubelet writes the kubelet's configuration and starts it; it
// returns once kubelet's healthz endpoint answers.
func StartKubelet(opts KubeletOptions) (*Kubelet, error) {
	k := &Kubelet{
		Dir:         opts.Dir,
		RootDir:     filepath.Join(opts.Dir, "root"),
		ManifestDir: filepath.Join(opts.Dir, "manifests"),
		PodLogsDir:  filepath.Join(opts.Dir, "pod-logs"),
		ResolvConf:  filepath.Join(opts.Dir, "resolv.conf"),
		Log:         filepath.Join(opts.Dir, "kubelet.log"),
		opts:        opts,
	}
	for _, d := range []string{k.RootDir, k.ManifestDir, k.PodLogsDir, filepath.Join(opts.Dir, "volume-plugins")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(k.ResolvConf, []byte("nameserver 127.0.0.53\nsearch e2e.test\noptions edns0\n"), 0o644); err != nil {
		return nil, err
	}
	return k, k.Start()
}

// Start (re)starts kubelet on the same directory, with the configuration in
// the options (SetConfig changes it).
func (k *Kubelet) Start() error {
	if k.opts.SystemdCgroups {
		k.opts.CgroupRoot = "/"
	}
	if err := makeCgroupRoot(k.opts.CgroupRoot); err != nil {
		return err
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	k.ReadOnlyPort = ports[1]
	cfg := map[string]any{
		"apiVersion":                    "kubelet.config.k8s.io/v1beta1",
		"kind":                          "KubeletConfiguration",
		"staticPodPath":                 k.ManifestDir,
		"fileCheckFrequency":            "2s",
		"syncFrequency":                 "10s",
		"address":                       "127.0.0.1",
		"port":                          ports[0],
		"readOnlyPort":                  ports[1],
		"healthzBindAddress":            "127.0.0.1",
		"healthzPort":                   ports[2],
		"authentication":                map[string]any{"anonymous": map[string]any{"enabled": false}, "webhook": map[string]any{"enabled": false}},
		"authorization":                 map[string]any{"mode": "AlwaysAllow"},
		"failSwapOn":                    false,
		"failCgroupV1":                  false,
		"containerRuntimeEndpoint":      k.opts.Endpoint,
		"imageServiceEndpoint":          k.opts.Endpoint,
		"resolvConf":                    k.ResolvConf,
		"clusterDNS":                    []string{"127.0.0.10"},
		"clusterDomain":                 "cluster.local",
		"cgroupRoot":                    k.opts.CgroupRoot,
		"cgroupsPerQOS":                 true,
		"enforceNodeAllocatable":        []string{"pods"},
		"localStorageCapacityIsolation": true,
		"podLogsDir":                    k.PodLogsDir,
		"volumePluginDir":               filepath.Join(k.Dir, "volume-plugins"),
		"makeIPTablesUtilChains":        false,
		"registerNode":                  false,
		"serializeImagePulls":           false,
		// Static pods are never evicted; keep node pressure out of the way.
		"evictionHard": map[string]string{"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
		// No image garbage collection unless a test asks for it.
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
	}
	maps.Copy(cfg, k.opts.Config)
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	config := filepath.Join(k.Dir, "config.json")
	if err := os.WriteFile(config, data, 0o644); err != nil {
		return err
	}
	log, err := os.OpenFile(k.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	fmt.Fprintf(log, "===== testenv: starting kubelet with %s:\n%s\n", config, data)
	args := append([]string{"--config", config, "--root-dir", k.RootDir, "--cert-dir", filepath.Join(k.RootDir, "pki"),
		"--hostname-override", k.opts.NodeName, "--v", "3"}, k.opts.Args...)
	k.cmd = exec.Command(k.opts.Binary, args...)
	k.cmd.Stdout, k.cmd.Stderr = log, log
	// Its own process group, so that a test's signals never reach it; and
	// killed if the test process dies without stopping it.
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := k.cmd.Start(); err != nil {
		return err
	}
	k.exit = make(chan error, 1)
	go func(c *exec.Cmd, exit chan error) { exit <- c.Wait() }(k.cmd, k.exit)

	healthz := fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[2])
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(healthz)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case werr := <-k.exit:
			k.exit <- werr
			k.cmd = nil
			return fmt.Errorf("kubelet exited (%v):\n%s", werr, k.LogTail(40))
		default:
		}
		if time.Now().After(deadline) {
			k.Stop()
			return fmt.Errorf("kubelet's healthz did not answer in 60s:\n%s", k.LogTail(40))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// SetConfig changes the configuration the next Start uses.
func (k *Kubelet) SetConfig(config map[string]any) { k.opts.Config = config }

// Running reports whether the kubelet process is alive.
func (k *Kubelet) Running() bool {
	if k.cmd == nil {
		return false
	}
	select {
	case err := <-k.exit:
		k.exit <- err
		return false
	default:
		return true
	}
}

// Stop ends kubelet with SIGTERM (SIGKILL after 10 s) and waits for it.
// Pods keep running: kubelet does not stop them when it exits.
func (k *Kubelet) Stop() error {
	if k.cmd == nil {
		return nil
	}
	k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exit:
	case <-time.After(10 * time.Second):
		k.cmd.Process.Kill()
		<-k.exit
	}
	k.cmd = nil
	return nil
}

// Cleanup removes what this kubelet leaves on the host once it and the
// pods' runtime are stopped: the cgroups under CgroupRoot in every
// hierarchy (kubepods.slice with systemd cgroups), mounts under Dir and the
// links it made in /var/log/containers (SaveKubeletHost undoes the rest).
func (k *Kubelet) Cleanup() error {
	var errs []error
	if err := k.Stop(); err != nil {
		errs = append(errs, err)
	}
	if err := mountinfo.UnmountUnder(k.Dir); err != nil {
		errs = append(errs, err)
	}
	if k.opts.SystemdCgroups {
		// kubelet's slices are systemd units: stopping kubepods.slice stops
		// and removes them all.
		if out, err := exec.Command("systemctl", "stop", "kubepods.slice").CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("systemctl stop kubepods.slice: %v: %s", err, out))
		}
	} else if err := RemoveCgroupTree(k.opts.CgroupRoot); err != nil {
		errs = append(errs, err)
	}
	links, _ := filepath.Glob("/var/log/containers/*")
	for _, l := range links {
		if target, err := os.Readlink(l); err == nil && strings.HasPrefix(target, k.PodLogsDir+"/") {
			os.Remove(l)
		}
	}
	return errors.Join(errs...)
}

// LogText is what kubelet has logged so far.
func (k *Kubelet) LogText() string {
	b, _ := os.ReadFile(k.Log)
	return string(b)
}

// LogTail is the last n lines kubelet logged.
func (k *Kubelet) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(k.LogText(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WritePod writes pod as a static pod manifest (<name>.json): kubelet runs
// it as "<name>-<node name>" in its namespace ("default" if none).
func (k *Kubelet) WritePod(pod *corev1.Pod) error {
	pod.APIVersion, pod.Kind = "v1", "Pod"
	data, err := json.MarshalIndent(pod, "", "  ")
	if err != nil {
		return err
	}
	// Written aside and renamed, so kubelet never reads half a manifest.
	tmp := filepath.Join(k.Dir, "."+pod.Name+".json")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(k.ManifestDir, pod.Name+".json"))
}

// RemovePod deletes the manifest WritePod wrote for the pod named name.
func (k *Kubelet) RemovePod(name string) error {
	return os.Remove(filepath.Join(k.ManifestDir, name+".json"))
}

// PodName is the name kubelet gives the static pod of a manifest's name.
func (k *Kubelet) PodName(name string) string { return name + "-" + k.opts.NodeName }

// Pods is the list of pods kubelet's read-only /pods endpoint reports, with
// their status.
func (k *Kubelet) Pods(ctx context.Context) ([]corev1.Pod, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/pods", k.ReadOnlyPort), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("GET /pods: %s: %s", resp.Status, b)
	}
	var list corev1.PodList
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, fmt.Errorf("GET /pods: %w", err)
	}
	return list.Items, nil
}

// Pod is the pod kubelet reports for the manifest named name, or nil.
func (k *Kubelet) Pod(ctx context.Context, name string) (*corev1.Pod, error) {
	pods, err := k.Pods(ctx)
	if err != nil {
		return nil, err
	}
	for i := range pods {
		if pods[i].Name == k.PodName(name) {
			return &pods[i], nil
		}
	}
	return nil, nil
}

// PodDir is kubelet's directory of a pod (volumes, etc-hosts, ...).
func (k *Kubelet) PodDir(uid string) string { return filepath.Join(k.RootDir, "pods", uid) }

// EmptyDir is the host directory of a pod's emptyDir volume.
func (k *Kubelet) EmptyDir(uid, volume string) string {
	return filepath.Join(k.PodDir(uid), "volumes", "kubernetes.io~empty-dir", volume)
}

// PodLogDir is the directory of a pod's container logs.
func (k *Kubelet) PodLogDir(pod *corev1.Pod) string {
	return filepath.Join(k.PodLogsDir, pod.Namespace+"_"+pod.Name+"_"+string(pod.UID))
}

// freePorts returns n distinct free TCP ports of 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// CgroupMounts lists the cgroup (v1 and v2) mount points of the host.
func CgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, postFields := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(postFields) < 1 {
			continue
		}
		if postFields[0] == "cgroup" || postFields[0] == "cgroup2" {
			mounts = append(mounts, mountinfo.Unescape(fields[4]))
		}
	}
	return mounts, sc.Err()
}

// makeCgroupRoot makes root in every cgroup hierarchy: kubelet refuses a
// cgroupRoot that does not exist. On cgroup v2 it also enables every
// controller of the hierarchy down to root: kubelet refuses a cgroupRoot
// that lacks one (on a unified host, the root's are systemd's already).
func makeCgroupRoot(root string) error {
	if root == "" || root == "/" {
		return nil
	}
	mounts, err := CgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		if err := os.MkdirAll(filepath.Join(m, root), 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(m, "cgroup.controllers")); err != nil || len(mounts) > 1 {
			continue // a v1 hierarchy, or a hybrid host's v2 one, which kubelet does not use
		}
		dir := m
		for _, part := range append([]string{""}, strings.Split(strings.Trim(root, "/"), "/")...) {
			dir = filepath.Join(dir, part)
			b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
			if err != nil {
				return err
			}
			for _, c := range strings.Fields(string(b)) {
				if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0o644); err != nil {
					return fmt.Errorf("enable the %s controller below %s: %w", c, dir, err)
				}
			}
		}
	}
	return nil
}

// RemoveCgroupTree removes the cgroup root and every cgroup below it in
// every hierarchy, deepest first. It fails for cgroups that still hold
// processes.
func RemoveCgroupTree(root string) error {
	if root == "" || root == "/" {
		return errors.New("testenv: refusing to remove the root cgroup")
	}
	mounts, err := CgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		var dirs []string
		filepath.WalkDir(filepath.Join(m, root), func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for _, d := range slices.Backward(dirs) {
			if err := rmdirRetry(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// rmdirRetry removes a cgroup, waiting a little while its last processes
// are reaped.
func rmdirRetry(dir string) error {
	var err error
	for range 50 {
		if err = syscall.Rmdir(dir); err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	procs, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	return fmt.Errorf("rmdir %s: %w (processes: %q)", dir, err, strings.Fields(string(procs)))
}
