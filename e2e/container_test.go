package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// podWithLogs runs a pod whose containers log under a temporary directory.
func podWithLogs(t *testing.T, p *testenv.Pierd, name string) (string, *runtimeapi.PodSandboxConfig) {
	t.Helper()
	cfg := podConfig(name)
	cfg.LogDirectory = t.TempDir()
	return runPod(t, p, cfg), cfg
}

func containerConfig(name string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: reg.Ref(busyboxImg)},
		Command:  cmd,
		LogPath:  name + ".log",
		Labels:   map[string]string{"container": name},
	}
}

func createContainer(t *testing.T, p *testenv.Pierd, podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	resp, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", cfg.Metadata.Name, err)
	}
	return resp.ContainerId
}

func startContainer(t *testing.T, p *testenv.Pierd, podID string, pod *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	id := createContainer(t, p, podID, pod, cfg)
	if _, err := p.Runtime.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("StartContainer %s: %v", cfg.Metadata.Name, err)
	}
	return id
}

func containerStatus(t *testing.T, p *testenv.Pierd, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	resp, err := p.Runtime.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("ContainerStatus %s: %v", id, err)
	}
	return resp.Status
}

// waitState waits for a container to reach state.
func waitState(t *testing.T, p *testenv.Pierd, id string, state runtimeapi.ContainerState) *runtimeapi.ContainerStatus {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := containerStatus(t, p, id)
		if st.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s is %v, want %v", id, st.State, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readLog(t *testing.T, path string) string {
	t.Helper()
	b, _ := os.ReadFile(path)
	return string(b)
}

func TestContainerLifecycleCrictl(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		os.WriteFile(path, []byte(content), 0o644)
		return path
	}
	podJSON := write("pod.json", `{"metadata":{"name":"crictl-c","namespace":"e2e","uid":"uid-crictl-c"},"log_directory":"`+dir+`/logs","linux":{}}`)
	ctrJSON := write("ctr.json", `{"metadata":{"name":"talker"},"image":{"image":"`+reg.Ref(busyboxImg)+`"},
		"command":["sh","-c","echo hello-out; echo hello-err >&2; while sleep 0.1; do :; done"],
		"labels":{"role":"talker"},"log_path":"talker.log"}`)
	out, err := p.Crictl("run", ctrJSON, podJSON)
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out)
	waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	for _, args := range [][]string{{"ps", "-q", "--state", "running"}, {"ps", "-q", "--label", "role=talker"}, {"ps", "-q", "--name", "talker"}} {
		if out, err := p.Crictl(args...); err != nil || strings.TrimSpace(out) != id {
			t.Fatalf("crictl %v: %q %v", args, out, err)
		}
	}
	if out, _ := p.Crictl("ps", "-q", "--state", "exited"); strings.TrimSpace(out) != "" {
		t.Fatalf("exited filter: %q", out)
	}
	if out, err := p.Crictl("inspect", id); err != nil || !strings.Contains(out, `"state": "CONTAINER_RUNNING"`) {
		t.Fatalf("inspect: %v %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ = p.Crictl("logs", id)
		if strings.Contains(out, "hello-out") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(out, "hello-out") {
		t.Fatalf("crictl logs: %q", out)
	}
	raw := readLog(t, filepath.Join(dir, "logs", "talker.log"))
	if !strings.Contains(raw, " stdout F hello-out\n") || !strings.Contains(raw, " stderr F hello-err\n") {
		t.Fatalf("CRI log format: %q", raw)
	}
	// logs -f follows until stopped.
	follow := exec.Command("crictl", "--runtime-endpoint", p.Endpoint(), "logs", "-f", id)
	follow.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	var fout strings.Builder
	follow.Stdout = &fout
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := p.Crictl("exec", "-s", id, "sh", "-c", "echo from-exec"); err != nil || strings.TrimSpace(out) != "from-exec" {
		t.Fatalf("crictl exec -s: %q %v", out, err)
	}
	if _, err := p.Crictl("exec", "-s", id, "sh", "-c", "echo late >&2; exit 4"); err == nil || !strings.Contains(err.Error(), "exited with 4: late") {
		t.Fatalf("crictl exec -s of a failing command: %v", err)
	}
	if _, err := p.Crictl("stop", "--timeout", "2", id); err != nil {
		t.Fatal(err)
	}
	follow.Process.Signal(syscall.SIGTERM)
	follow.Wait()
	if !strings.Contains(fout.String(), "hello-out") {
		t.Errorf("crictl logs -f printed %q", fout.String())
	}
	st := containerStatus(t, p, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 143 || st.Reason != "Error" || st.FinishedAt == 0 || st.LogPath != filepath.Join(dir, "logs", "talker.log") {
		t.Fatalf("after stop: %v", st)
	}
	if _, err := p.Crictl("rm", id); err != nil {
		t.Fatal(err)
	}
	if out, _ := p.Crictl("ps", "-aq"); strings.TrimSpace(out) != "" {
		t.Fatalf("containers after rm: %q", out)
	}
}

func TestContainerExits(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "exits")
	cases := []struct {
		name   string
		cmd    []string
		code   int32
		reason string
		limit  int64
	}{
		{"ok", []string{"true"}, 0, "Completed", 0},
		{"three", []string{"sh", "-c", "exit 3"}, 3, "Error", 0},
		{"oom", []string{"sh", "-c", "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done"}, 137, "OOMKilled", 32 << 20},
	}
	for _, c := range cases {
		cfg := containerConfig(c.name, c.cmd...)
		if c.limit > 0 {
			cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: c.limit}}
		}
		id := startContainer(t, p, podID, pod, cfg)
		st := waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_EXITED)
		if st.ExitCode != c.code || st.Reason != c.reason || st.StartedAt == 0 || st.FinishedAt < st.StartedAt {
			t.Errorf("%s: exit %d reason %q (started %d finished %d), want %d %q", c.name, st.ExitCode, st.Reason, st.StartedAt, st.FinishedAt, c.code, c.reason)
		}
	}
}

func TestExecSync(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(userImg))
	podID, pod := podWithLogs(t, p, "exec")
	cfg := containerConfig("sleeper", "sleep", "1000")
	cfg.Image.Image = reg.Ref(userImg) // USER 1002
	id := startContainer(t, p, podID, pod, cfg)
	resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "id -u; echo oops >&2; exit 2"}})
	if err != nil || strings.TrimSpace(string(resp.Stdout)) != "1002" || strings.TrimSpace(string(resp.Stderr)) != "oops" || resp.ExitCode != 2 {
		t.Fatalf("ExecSync: %v %v", resp, err)
	}
	start := time.Now()
	resp, err = p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "echo before; sleep 30"}, Timeout: 1})
	if time.Since(start) > 10*time.Second {
		t.Fatalf("ExecSync timeout took %s", time.Since(start))
	}
	t.Logf("timed-out exec: %v %v", resp, err)
	if err == nil && resp.ExitCode == 0 {
		t.Fatalf("a timed-out exec reported success: %v", resp)
	}
	if _, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: "nosuch", Cmd: []string{"true"}}); status.Code(err) != codes.NotFound {
		t.Fatalf("exec in an unknown container: %v", err)
	}
	createdCfg := containerConfig("created", "sleep", "1000")
	createdCfg.Image.Image = reg.Ref(userImg)
	created := createContainer(t, p, podID, pod, createdCfg)
	if _, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: created, Cmd: []string{"true"}}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("exec in a created container: %v", err)
	}
}

func TestPodSharedPIDNamespace(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	cfg := podConfig("sharedpid")
	cfg.LogDirectory = t.TempDir()
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}
	podID := runPod(t, p, cfg)
	startContainer(t, p, podID, cfg, containerConfig("one", "sleep", "1001"))
	b := startContainer(t, p, podID, cfg, containerConfig("two", "sleep", "1002"))
	resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: b, Cmd: []string{"sh", "-c", "cat /proc/1/cmdline; echo; ps"}})
	if err != nil || !strings.Contains(string(resp.Stdout), "pier-shim") || !strings.Contains(string(resp.Stdout), "sleep 1001") {
		t.Fatalf("container two does not see the pod's processes: %q %v", resp.GetStdout(), err)
	}
}

func TestContainerBadInput(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "bad")
	for name, call := range map[string]func() error{
		"status": func() error {
			_, err := p.Runtime.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: "nosuch"})
			return err
		},
		"start": func() error {
			_, err := p.Runtime.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: "nosuch"})
			return err
		},
		"create in a missing pod": func() error {
			_, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: "nosuchpod", Config: containerConfig("x", "true")})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.NotFound {
			t.Errorf("%s: %v, want NotFound", name, err)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: "nosuch"}); err != nil {
			t.Errorf("stop of an unknown container: %v", err)
		}
		if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: "nosuch"}); err != nil {
			t.Errorf("remove of an unknown container: %v", err)
		}
	}
	createContainer(t, p, podID, pod, containerConfig("dup", "sleep", "100"))
	if _, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("dup", "sleep", "100")}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("duplicate name: %v", err)
	}
	id := createContainer(t, p, podID, pod, containerConfig("nocmd", "/no/such/command"))
	_, err := p.Runtime.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: id})
	if err == nil || !strings.Contains(err.Error(), "/no/such/command") {
		t.Errorf("start of a missing command: %v", err)
	}
	st := containerStatus(t, p, id)
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || !strings.Contains(st.Message, "/no/such/command") {
		t.Errorf("status of a container whose command is missing: %v", st)
	}
	if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("late", "true")}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("create in a stopped pod: %v", err)
	}
	_, err = p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: podConfig("crun"), RuntimeHandler: "crun"})
	if err != nil && status.Code(err) != codes.FailedPrecondition {
		t.Errorf("pod on crun: %v", err)
	}
}

func TestOOMScoreAdjClamped(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "oomadj")
	cfg := containerConfig("adj", "sleep", "1000")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{OomScoreAdj: -998}}
	id := startContainer(t, p, podID, pod, cfg)
	resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"cat", "/proc/1/oom_score_adj"}})
	own, _ := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", p.Pid()))
	if err != nil || strings.TrimSpace(string(resp.Stdout)) != strings.TrimSpace(string(own)) {
		t.Fatalf("oom_score_adj in the container %q (%v), want pierd's %q", resp.GetStdout(), err, own)
	}
	if !strings.Contains(p.LogText(), "oom_score_adj") {
		t.Error("the clamp was not logged")
	}
}

func TestContainersSurvivePierdRestart(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "survive")
	counter := startContainer(t, p, podID, pod, containerConfig("counter", "sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done"))
	late := startContainer(t, p, podID, pod, containerConfig("late", "sh", "-c", "sleep 1; exit 7"))
	before := containerStatus(t, p, counter)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // "late" exits while pierd is down
	logLen := len(readLog(t, before.LogPath))
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	st := containerStatus(t, p, counter)
	if st.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.StartedAt != before.StartedAt {
		t.Fatalf("after the restart: %v", st)
	}
	time.Sleep(300 * time.Millisecond)
	if len(readLog(t, before.LogPath)) <= logLen {
		t.Fatal("the log stopped growing")
	}
	ls := containerStatus(t, p, late)
	if ls.State != runtimeapi.ContainerState_CONTAINER_EXITED || ls.ExitCode != 7 || ls.FinishedAt == 0 || time.Since(time.Unix(0, ls.FinishedAt)) < time.Second {
		t.Fatalf("a container that exited while pierd was down: %v", ls)
	}
	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: counter, Timeout: 5}); err != nil {
		t.Fatal(err)
	}
	if st := containerStatus(t, p, counter); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Fatalf("stop after the restart: %v", st)
	}
}

func TestShimKilled(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "shimkill")
	id := startContainer(t, p, podID, pod, containerConfig("victim", "sleep", "1234"))
	resp, err := p.Runtime.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var info struct{ ShimPid int }
	json.Unmarshal([]byte(resp.Info["info"]), &info)
	if info.ShimPid == 0 {
		t.Fatalf("no shim pid in %s", resp.Info["info"])
	}
	syscall.Kill(info.ShimPid, syscall.SIGKILL)
	deadline := time.Now().Add(10 * time.Second)
	var st *runtimeapi.ContainerStatus
	for time.Now().Before(deadline) {
		if st = containerStatus(t, p, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.State == runtimeapi.ContainerState_CONTAINER_RUNNING || st.Reason == "" || st.Message == "" {
		t.Fatalf("after the shim was killed: %v", st)
	}
	if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if out, _ := exec.Command("pgrep", "-f", "sleep 1234").Output(); len(out) > 0 {
		t.Fatalf("the container's process survived its removal: %s", out)
	}
}

func TestContainerStats(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "stats")
	cfg := containerConfig("busy", "sh", "-c", "dd if=/dev/zero of=/file bs=1M count=2; while :; do :; done")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 64 << 20}}
	id := startContainer(t, p, podID, pod, cfg)
	time.Sleep(500 * time.Millisecond)
	for i := 0; i < 2; i++ { // the second call has a CPU rate
		resp, err := p.Runtime.ListContainerStats(ctx(t), &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{PodSandboxId: podID}})
		if err != nil || len(resp.Stats) != 1 {
			t.Fatalf("ListContainerStats: %v %v", resp, err)
		}
		st := resp.Stats[0]
		if st.Attributes.Id != id || st.Cpu.UsageCoreNanoSeconds.GetValue() == 0 || st.Memory.WorkingSetBytes.GetValue() == 0 ||
			st.Memory.AvailableBytes.GetValue() == 0 || st.WritableLayer.UsedBytes.GetValue() < 2<<20 {
			t.Fatalf("stats: %v", st)
		}
		if i == 1 && st.Cpu.UsageNanoCores.GetValue() < 1e8 {
			t.Fatalf("a busy loop uses %d nanocores", st.Cpu.UsageNanoCores.GetValue())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestConcurrentCreateAndRemove creates, starts and removes containers of
// pods without a cgroup parent from several clients at once, as kubelet
// does: they share pier's default cgroup parent, which the last removal
// takes away while other creates make cgroups under it.
func TestConcurrentCreateAndRemove(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	pod := podConfig("churn")
	pod.Linux.CgroupParent = ""
	pod.LogDirectory = t.TempDir()
	podID := runPod(t, p, pod)
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := range 8 {
				cfg := containerConfig(fmt.Sprintf("churn-%d-%d", w, i), "true")
				resp, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
				if err == nil {
					_, err = p.Runtime.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId})
					if _, rerr := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: resp.ContainerId}); err == nil {
						err = rerr
					}
				}
				if err != nil {
					t.Errorf("container %s: %v", cfg.Metadata.Name, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestKubeletResources starts a container with every limit kubelet sends,
// hugepage limits among them (kubelet sends one per page size, usually 0),
// and reads them back from inside: a limit whose controller the node lacks
// (on this machine kind, hugetlb has no v1 hierarchy) is dropped with one
// warning for the node's life, and the container runs.
func TestKubeletResources(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "resources")
	res := &runtimeapi.LinuxContainerResources{
		CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 96 << 20,
		MemorySwapLimitInBytes: 96 << 20, OomScoreAdj: 900,
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}, {PageSize: "1GB", Limit: 0}},
	}
	var ids []string
	for _, name := range []string{"one", "two"} {
		cfg := containerConfig(name, "sleep", "1000")
		cfg.Linux = &runtimeapi.LinuxContainerConfig{Resources: res}
		ids = append(ids, startContainer(t, p, podID, pod, cfg))
	}
	// Where the cgroup files are depends on the layout: v1 per controller,
	// v2 one directory.
	read := `for f in /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu.weight; do [ -f $f ] && echo "$f $(cat $f)"; done; true`
	resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: ids[0], Cmd: []string{"sh", "-c", read}})
	if err != nil {
		t.Fatal(err)
	}
	out := string(resp.Stdout)
	for _, want := range [][]string{{"memory.limit_in_bytes 100663296", "memory.max 100663296"}, {"cpu.cfs_quota_us 50000", "cpu.max 50000 100000"}} {
		if !strings.Contains(out, want[0]) && !strings.Contains(out, want[1]) {
			t.Errorf("limit %q not in the container's cgroup:\n%s", want, out)
		}
	}
	if n := strings.Count(p.LogText(), "no hugetlb cgroup controller"); hugetlbUsable() && n != 0 || !hugetlbUsable() && n != 1 {
		t.Errorf("the dropped hugepage limits were logged %d times", n)
	}
}

// hugetlbUsable reports whether containers can use a hugetlb controller here.
func hugetlbUsable() bool {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		b, _ := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
		return strings.Contains(string(b), "hugetlb")
	}
	_, err := os.Stat("/sys/fs/cgroup/hugetlb")
	return err == nil
}

// TestRuntimeLeftAMount: runc 1.1 bind-mounts its binary into the
// container's runtime state directory while it starts a process there; a
// runc killed at that moment leaves the mount. Removing the container
// removes it and the directory.
func TestRuntimeLeftAMount(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "leftmount")
	id := startContainer(t, p, podID, pod, containerConfig("left", "sleep", "1000"))
	dir := filepath.Join(p.Dir, "state", "runtime", "runc", id)
	leak := filepath.Join(dir, "runc.e2eXYZ")
	if err := os.WriteFile(leak, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("/bin/busybox", leak, "", syscall.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Unmount(leak, syscall.MNT_DETACH) })
	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the runtime's state directory of the container is left: %v", err)
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), leak) {
		t.Errorf("the runtime's mount is left: %s", leak)
	}
}
