package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
	"github.com/pier-runtime/pier/internal/mountinfo"
)

// usernsHostRoot is where the test pods' user namespaces map uid and gid 0.
const usernsHostRoot = 200000

// usernsPierd starts a pierd whose state directories the pods' user
// namespaces can pass through: runc's init, inside the namespace, reaches
// the root file system by path, and the test's temporary directory is
// root's alone.
func usernsPierd(t *testing.T) *testenv.Pierd {
	t.Helper()
	p := startPierd(t, "")
	for _, d := range []string{filepath.Dir(p.Dir), p.Dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	mustPull(t, p, reg.Ref(busyboxImg))
	return p
}

// usernsPodConfig is a pod with a user namespace of its own: ids 0 to
// 65535 map to 200000 and up.
func usernsPodConfig(t *testing.T, name string) *runtimeapi.PodSandboxConfig {
	cfg := podConfig(name)
	cfg.LogDirectory = t.TempDir()
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: usernsHostRoot, Length: 65536}}
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{
		Pid:           runtimeapi.NamespaceMode_CONTAINER,
		UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: m, Gids: m},
	}}
	return cfg
}

// usernsContainer is a container of pod, with the pod's namespace options,
// as kubelet sends them.
func usernsContainer(pod *runtimeapi.PodSandboxConfig, name string, cmd ...string) *runtimeapi.ContainerConfig {
	cfg := containerConfig(name, cmd...)
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: pod.Linux.SecurityContext.NamespaceOptions,
	}}
	return cfg
}

// waitLog waits for a container's log to hold want.
func waitLog(t *testing.T, path, want string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := readLog(t, path)
		if strings.Contains(l, want) {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %s lacks %q:\n%s", path, want, l)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// inNamespace lists the host pids of the processes in the user namespace
// pinned at pin.
func inNamespace(t *testing.T, pin string) []int {
	t.Helper()
	var want syscall.Stat_t
	if err := syscall.Stat(pin, &want); err != nil {
		t.Fatal(err)
	}
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join(d, "ns", "user"), &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			var pid int
			fmt.Sscan(filepath.Base(d), &pid)
			pids = append(pids, pid)
		}
	}
	return pids
}

func hostOwner(t *testing.T, path string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
}

// TestUsernsPod: a pod with a user namespace of its own. Its containers
// share that namespace; their processes run as the mapped host ids; the
// image's layers and volumes are idmapped, so that files owned by 0 on
// disk are root's in the container and what the container's root writes to
// a volume is stored as 0 (to its upper directory, as 200000); the pod's
// files and /dev/shm work; removing the pod leaves no mount or process.
func TestUsernsPod(t *testing.T) {
	p := usernsPierd(t)
	pod := usernsPodConfig(t, "userns")
	podID := runPod(t, p, pod)
	_, info := inspectPod(t, p, podID)
	pin := info.Namespaces["user"]
	if pin == "" {
		t.Fatalf("the pod has no pinned user namespace: %v", info.Namespaces)
	}

	vol := t.TempDir()
	os.WriteFile(filepath.Join(vol, "hostfile"), []byte("h"), 0o644)
	os.Chown(filepath.Join(vol, "hostfile"), 1000, 1000)
	cfg := usernsContainer(pod, "main", "sh", "-c", `cat /proc/self/uid_map; echo uid=$(id -u); echo root=$(stat -c %u:%g /) passwd=$(stat -c %u /etc/passwd);
echo hostfile=$(stat -c %u:%g /data/hostfile); echo hostname=$(cat /etc/hostname); grep -q localhost /etc/hosts && echo hosts=ok;
echo a > /rootfile && echo b > /data/volfile && echo c > /dev/shm/shmfile && echo written; sleep 1000`)
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: vol}}
	main := startContainer(t, p, podID, pod, cfg)
	mainLog := filepath.Join(pod.LogDirectory, "main.log")
	l := waitLog(t, mainLog, "written")
	if !regexp.MustCompile(fmt.Sprintf(`\s+0\s+%d\s+65536\n`, usernsHostRoot)).MatchString(l) {
		t.Errorf("the container's uid_map is not the pod's mapping:\n%s", l)
	}
	for _, want := range []string{
		"uid=0", "root=0:0", "passwd=0", "hostfile=1000:1000", "hostname=userns", "hosts=ok",
	} {
		if !strings.Contains(l, want) {
			t.Errorf("the container's output lacks %q:\n%s", want, l)
		}
	}
	// Stored as owned by 0: the mounts are idmapped.
	if o := hostOwner(t, filepath.Join(vol, "volfile")); o != "0:0" {
		t.Errorf("volume file made by the container's root is owned by %s on the host, want 0:0", o)
	}
	// The upper directory is not idmapped (overlayfs cannot use one): it is
	// the pod's root's, and what it writes there is stored as its host ids.
	if o, want := hostOwner(t, filepath.Join(p.Root(), "containers", main, "upper", "rootfile")), fmt.Sprintf("%d:%d", usernsHostRoot, usernsHostRoot); o != want {
		t.Errorf("root file system file made by the container's root is owned by %s in the upper directory, want %s", o, want)
	}

	peer := startContainer(t, p, podID, pod, usernsContainer(pod, "peer", "sh", "-c", "cat /proc/self/uid_map; echo peer-ready; sleep 1000"))
	waitLog(t, filepath.Join(pod.LogDirectory, "peer.log"), "peer-ready")
	for _, id := range []string{main, peer} {
		resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "id -u; readlink /proc/self/ns/user; cat /dev/shm/shmfile"}})
		if err != nil || resp.ExitCode != 0 || !strings.HasPrefix(string(resp.Stdout), "0\n") || !strings.HasSuffix(string(resp.Stdout), "c\n") {
			t.Errorf("exec in %s: %q %q %v", id, resp.GetStdout(), resp.GetStderr(), err)
		}
	}
	// Both containers' processes are in the pod's namespace (and nothing
	// else, the namespaces' maker has ended), as host uid 200000.
	pids := inNamespace(t, pin)
	if len(pids) < 2 {
		t.Fatalf("processes in the pod's user namespace: %v, want both containers'", pids)
	}
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		want := fmt.Sprintf("Uid:\t%d\t%d\t%d\t%d\n", usernsHostRoot, usernsHostRoot, usernsHostRoot, usernsHostRoot)
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("process %d (%q) in the pod's namespace: not running as %d:\n%s", pid, cmd, usernsHostRoot, b)
		}
		if bytes.Contains(cmd, []byte("pod-init")) {
			t.Errorf("the pod init %d outlived the pinning of the pod's namespaces", pid)
		}
	}

	for _, id := range []string{main, peer} {
		if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatal(err)
		}
	}
	if n := mountsBelow(t, filepath.Join(p.Dir, "state", "containers")); n != 0 {
		t.Errorf("%d mounts left under the containers' state after their removal", n)
	}
	if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if n := mountsBelow(t, p.Dir); n != 0 {
		t.Errorf("%d mounts left after the pod's removal", n)
	}
	if b, err := os.ReadFile(filepath.Join(vol, "hostfile")); err != nil || string(b) != "h" {
		t.Errorf("the volume's own file after removal: %q %v", b, err)
	}
}

// TestUsernsPodSharedPID: a pod with a user namespace and one PID
// namespace: the pod init is PID 1 of a PID namespace the user namespace
// owns (the container can mount /proc in it) and runs as the mapped root.
func TestUsernsPodSharedPID(t *testing.T) {
	p := usernsPierd(t)
	pod := usernsPodConfig(t, "userns-pid")
	pod.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	podID := runPod(t, p, pod)
	id := startContainer(t, p, podID, pod, usernsContainer(pod, "one", "sleep", "1000"))
	waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "cat /proc/1/cmdline; echo; grep ^Uid /proc/1/status; cat /proc/self/uid_map"}})
	if err != nil || !strings.Contains(string(resp.Stdout), "pier-shim") || !strings.Contains(string(resp.Stdout), "Uid:\t0\t0\t0\t0") || !strings.Contains(string(resp.Stdout), fmt.Sprint(usernsHostRoot)) {
		t.Fatalf("in the container: %q %q %v", resp.GetStdout(), resp.GetStderr(), err)
	}
}

// TestUsernsRefused: user namespace options pier cannot honour are
// refused at RunPodSandbox and CreateContainer.
func TestUsernsRefused(t *testing.T) {
	p := usernsPierd(t)
	m := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: usernsHostRoot, Length: 65536}}
	for name, u := range map[string]*runtimeapi.UserNamespace{
		"CONTAINER":      {Mode: runtimeapi.NamespaceMode_CONTAINER},
		"two mappings":   {Mode: runtimeapi.NamespaceMode_POD, Uids: append(m, m...), Gids: m},
		"uids only":      {Mode: runtimeapi.NamespaceMode_POD, Uids: m},
		"NODE with maps": {Mode: runtimeapi.NamespaceMode_NODE, Uids: m, Gids: m},
		"overflow":       {Mode: runtimeapi.NamespaceMode_POD, Uids: []*runtimeapi.IDMapping{{HostId: 1 << 31, Length: 1 << 31}}, Gids: m},
	} {
		cfg := podConfig("refused")
		cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: u}}
		if _, err := p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
	// A container cannot leave its pod's user namespace.
	pod := usernsPodConfig(t, "userns-refused")
	podID := runPod(t, p, pod)
	cfg := usernsContainer(pod, "host", "true")
	cfg.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}}
	if _, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a container asking for the host's user namespace in a userns pod: %v, want InvalidArgument", err)
	}
	st, err := p.Runtime.Status(ctx(t), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range st.RuntimeHandlers {
		if !h.Features.GetUserNamespaces() {
			t.Errorf("handler %q does not report user namespaces (%s)", h.Name, st.Info["userNamespaces"])
		}
	}
}

// TestUsernsCleanupAfterCrash: the idmapped mounts of a container made
// before pierd was killed are found and removed by the next pierd.
func TestUsernsCleanupAfterCrash(t *testing.T) {
	p := usernsPierd(t)
	pod := usernsPodConfig(t, "userns-crash")
	podID := runPod(t, p, pod)
	cfg := usernsContainer(pod, "vol", "sleep", "1000")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: t.TempDir()}}
	id := startContainer(t, p, podID, pod, cfg)
	waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if n := mountsBelow(t, filepath.Join(p.Dir, "state", "containers")); n < 2 {
		t.Fatalf("%d mounts under the containers' state, want the root file system and clones", n)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if n := mountsBelow(t, filepath.Join(p.Dir, "state", "containers")); n != 0 {
		t.Errorf("%d mounts left under the containers' state", n)
	}
	if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if n := mountsBelow(t, p.Dir); n != 0 {
		t.Errorf("%d mounts left after the pod's removal", n)
	}
}

// mountsBelow counts the mounts below dir.
func mountsBelow(t *testing.T, dir string) int {
	t.Helper()
	points, err := mountinfo.Under(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(slices.DeleteFunc(points, func(p string) bool { return p == dir }))
}
