package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// The host-isolation tests: each hole is tried as a local user of the node
// with no privilege at all, uid and gid 65534 and no other group.

const nobody = 65534

// asNobody runs args as uid and gid 65534 without supplementary groups and
// returns what it printed. A shell that runs as that user execs args:
// setpriv itself execs its command while it still holds root's
// capabilities (it keeps them across its setresuid), so the kernel would
// look the command's path up as root.
func asNobody(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", "--", "/bin/sh", "-c", `exec "$@"`, "sh"}, args...)
	out, err := exec.Command("setpriv", cmd...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// isolatedPierd starts a pierd whose directories are where a local user
// could pass through to them, as /var/lib/pier and /run/pier are: only
// pier's own modes may stop the user (the test's temporary directory is
// root's alone).
func isolatedPierd(t *testing.T) *testenv.Pierd {
	t.Helper()
	p := startPierd(t, "")
	if err := os.Chmod(filepath.Dir(p.Dir), 0o711); err != nil {
		t.Fatal(err)
	}
	if out, err := asNobody(t, "test", "-x", p.Dir); err != nil {
		t.Fatalf("uid %d cannot pass through to %s, the test proves nothing: %s %v", nobody, p.Dir, out, err)
	}
	return p
}

func randomName(t *testing.T) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "pier-iso-" + hex.EncodeToString(b)
}

// overlayOf finds, as uid 65534 would, the mount of a container's root file
// system in the mount table that every user may read, and its upper
// directory.
func overlayOf(t *testing.T, id string) (rootfs, upper string) {
	t.Helper()
	table, err := asNobody(t, "cat", "/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(table))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || !strings.Contains(f[4], id) || f[len(f)-3] != "overlay" {
			continue
		}
		for _, o := range strings.Split(f[len(f)-1], ",") {
			if v, ok := strings.CutPrefix(o, "upperdir="); ok {
				return f[4], v
			}
		}
	}
	t.Fatalf("no overlay of container %s in /proc/self/mountinfo", id)
	return "", ""
}

// TestIsolationContainerFiles: a container writes a setuid-root binary and
// a device node; a local user who finds where they are on the host can run
// neither, through the container's root file system nor its upper
// directory.
func TestIsolationContainerFiles(t *testing.T) {
	p := isolatedPierd(t)
	mustPull(t, p, reg.Ref(busyboxImg))
	probe, err := testenv.EUIDProbe()
	if err != nil {
		t.Fatal(err)
	}
	probeDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(probeDir, "euid"), probe, 0o755); err != nil {
		t.Fatal(err)
	}
	podID, pod := podWithLogs(t, p, "iso-files")
	cfg := containerConfig("writer", "sleep", "1000")
	cfg.Mounts = []*runtimeapi.Mount{{HostPath: probeDir, ContainerPath: "/probe", Readonly: true}}
	id := startContainer(t, p, podID, pod, cfg)
	res, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c",
		"cp /probe/euid /tmp/euid && chmod 4755 /tmp/euid && mknod -m 666 /tmp/null c 1 3 && /tmp/euid"}, Timeout: 10})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("the container could not make its files: %v %s%s", err, res.GetStdout(), res.GetStderr())
	}

	rootfs, upper := overlayOf(t, id)
	t.Logf("uid %d finds container %s (its id is on its shim's command line) in /proc/self/mountinfo: root file system %s, upper directory %s", nobody, id, rootfs, upper)
	for _, dir := range []string{rootfs, upper} {
		bin := filepath.Join(dir, "tmp", "euid")
		if out, err := asNobody(t, bin); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("uid %d ran the container's setuid-root %s: %q, %v; want permission denied", nobody, bin, out, err)
		}
		dev := filepath.Join(dir, "tmp", "null")
		if out, err := asNobody(t, "sh", "-c", "echo x > "+dev); err == nil || !strings.Contains(out, "Permission denied") {
			t.Errorf("uid %d opened the container's device node %s: %q, %v; want permission denied", nobody, dev, out, err)
		}
	}
}

// TestIsolationRecords: records are root's alone, and so is every
// directory of a container and of the image store.
func TestIsolationRecords(t *testing.T) {
	p := isolatedPierd(t)
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "iso-records")
	cfg := containerConfig("secret", "true")
	cfg.Envs = []*runtimeapi.KeyValue{{Key: "PASSWORD", Value: []byte("hunter2")}}
	id := startContainer(t, p, podID, pod, cfg)
	waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_EXITED)

	root, state := p.Root(), filepath.Join(p.Dir, "state")
	ctrDir, stateDir := filepath.Join(root, "containers", id), filepath.Join(state, "containers", id)
	want := map[string]os.FileMode{
		filepath.Join(ctrDir, "container.json"):          0o600,
		filepath.Join(stateDir, "bundle", "config.json"): 0o600,
		filepath.Join(stateDir, "shim", "shim.json"):     0o600,
		filepath.Join(stateDir, "shim", "exit.json"):     0o600,
		filepath.Join(root, "pods", podID, "pod.json"):   0o600,
		ctrDir:                             0o700,
		stateDir:                           0o700,
		filepath.Join(ctrDir, "work"):      0o700,
		filepath.Join(stateDir, "bundle"):  0o700,
		filepath.Join(stateDir, "shim"):    0o700,
		filepath.Join(root, "layers"):      0o700,
		filepath.Join(root, "images"):      0o700,
		filepath.Join(root, "containers"):  0o711,
		filepath.Join(state, "containers"): 0o711,
		filepath.Join(state, "s"):          0o700,
	}
	images, _ := filepath.Glob(filepath.Join(root, "images", "*", "*.json"))
	layers, _ := filepath.Glob(filepath.Join(root, "layers", "*", "layer.json"))
	if len(images) == 0 || len(layers) == 0 {
		t.Fatalf("no image or layer records under %s", root)
	}
	for _, f := range append(images, layers...) {
		want[f] = 0o600
	}
	for path, mode := range want {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("%v", err)
		} else if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	// Whoever knows the id cannot read the container's secrets.
	record := filepath.Join(ctrDir, "container.json")
	if out, err := asNobody(t, "cat", record); err == nil {
		t.Errorf("uid %d read %s: %.200q", nobody, record, out)
	}
	if out, err := asNobody(t, "ls", filepath.Join(root, "layers")); err == nil {
		t.Errorf("uid %d listed the image layers: %q", nobody, out)
	}
}

// TestIsolationLogPath: a log path that leads out of the pod's log
// directory is refused, and nothing is made.
func TestIsolationLogPath(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "iso-logpath")
	name := randomName(t)
	escape := "../../../../../../../../tmp/" + name + "/c.log"
	if got := filepath.Join(pod.LogDirectory, escape); got != "/tmp/"+name+"/c.log" {
		t.Fatalf("the escape leads to %s, not to /tmp", got)
	}
	made := []string{"/tmp/" + name, filepath.Join(filepath.Dir(pod.LogDirectory), name)}
	t.Cleanup(func() {
		for _, path := range made {
			os.RemoveAll(path)
		}
	})
	for i, logPath := range []string{escape, "/tmp/" + name + "/c.log", "c/../../" + name + "/c.log"} {
		cfg := containerConfig(fmt.Sprintf("escape%d", i), "echo", "escaped")
		cfg.LogPath = logPath
		_, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("log path %q: %v, want InvalidArgument", logPath, err)
		}
	}
	for _, path := range made {
		if _, err := os.Lstat(path); err == nil {
			t.Errorf("%s was made", path)
		}
	}
	list, err := p.Runtime.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
	if err != nil || len(list.Containers) != 0 {
		t.Errorf("containers left: %v, %v", list.GetContainers(), err)
	}
}

// TestIsolationLogSymlink: a user who can write in a pod's log directory
// (as a container that mounts it can) plants symbolic links there, to a
// host file and to a host directory: pier writes through none of them, at
// the first open or at a reopen.
func TestIsolationLogSymlink(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "iso-symlink")
	logDir := pod.LogDirectory
	if err := os.Chown(logDir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Dir(logDir), 0o711)
	hostDir := t.TempDir()
	hostFile := filepath.Join(hostDir, "host-file")
	if err := os.WriteFile(hostFile, []byte("host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	untouched := func(when string) {
		t.Helper()
		if b, _ := os.ReadFile(hostFile); string(b) != "host\n" {
			t.Errorf("%s: pier wrote to the host file: %q", when, b)
		}
		if entries, _ := os.ReadDir(hostDir); len(entries) != 1 {
			t.Errorf("%s: pier made files in the host directory: %v", when, entries)
		}
	}
	plant := func(target, link string) {
		t.Helper()
		if out, err := asNobody(t, "ln", "-s", target, filepath.Join(logDir, link)); err != nil {
			t.Fatalf("plant %s: %s %v", link, out, err)
		}
	}

	// At the first open: the container does not start.
	plant(hostFile, "first.log")
	cfg := containerConfig("first", "echo", "through the link")
	cfg.LogPath = "first.log"
	id := createContainer(t, p, podID, pod, cfg)
	if _, err := p.Runtime.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: id}); err == nil {
		t.Error("a container whose log is a symbolic link started")
	}
	untouched("first open")

	// A directory on the way: refused at create.
	plant(hostDir, "dir")
	cfg = containerConfig("dir", "echo", "through the link")
	cfg.LogPath = "dir/c.log"
	if _, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod}); err == nil {
		t.Error("a container whose log directory is a symbolic link was created")
	}
	untouched("create")

	// At a reopen: refused, and the log in use stays.
	cfg = containerConfig("rotated", "sh", "-c", "while :; do echo line; sleep 0.05; done")
	id = startContainer(t, p, podID, pod, cfg)
	logPath := filepath.Join(logDir, cfg.LogPath)
	waitForFile(t, logPath)
	if out, err := asNobody(t, "mv", logPath, logPath+".1"); err != nil {
		t.Fatalf("rotate: %s %v", out, err)
	}
	plant(hostFile, cfg.LogPath)
	if _, err := p.Runtime.ReopenContainerLog(ctx(t), &runtimeapi.ReopenContainerLogRequest{ContainerId: id}); err == nil {
		t.Error("the log was reopened through a symbolic link")
	}
	untouched("reopen")
}

// waitForFile waits until path has some content.
func waitForFile(t *testing.T, path string) {
	t.Helper()
	for range 500 {
		if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing written to %s", path)
}

// TestIsolationPodConfig: pod settings that end up in host paths, files or
// CNI arguments are refused at the CRI, and nothing is made on the host.
func TestIsolationPodConfig(t *testing.T) {
	p := isolatedPierd(t)
	name := randomName(t)
	for what, change := range map[string]func(*runtimeapi.PodSandboxConfig){
		"sysctl key leaving /proc/sys": func(c *runtimeapi.PodSandboxConfig) {
			c.Linux.Sysctls = map[string]string{"net/../../../tmp/" + name: "1"}
		},
		"newline in the hostname": func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "web\n6.6.6.6 evil" },
		"newline in a DNS search": func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Searches: []string{"svc.local\nnameserver 6.6.6.6"}}
		},
		"DNS server that is no address": func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.0.0.1\nsearch evil"}}
		},
		"CNI argument in the pod name": func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "web;IgnoreUnknown=1;K8S_POD_NAME=x" },
	} {
		cfg := podConfig("isolated")
		change(cfg)
		_, err := p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", what, err)
		} else {
			t.Logf("%s: %v", what, err)
		}
	}
	if _, err := os.Stat("/tmp/" + name); !os.IsNotExist(err) {
		os.Remove("/tmp/" + name)
		t.Errorf("a pod's sysctl made /tmp/%s: %v", name, err)
	}
	if out, err := p.Crictl("pods", "-q"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("pods left: %q %v", out, err)
	}
}
