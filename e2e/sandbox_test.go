package e2e

import (
	"encoding/json"
	"fmt"
	"net"
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

var podCount int

// podConfig is a pod config with unique metadata.
func podConfig(name string) *runtimeapi.PodSandboxConfig {
	podCount++
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: fmt.Sprintf("uid-%s-%d", name, podCount)},
		Hostname: name,
		Labels:   map[string]string{"app": name, "suite": "e2e"},
		Linux:    &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/pier-e2e"},
	}
}

func runPod(t *testing.T, p *testenv.Pierd, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	resp, err := p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", cfg.Metadata.Name, err)
	}
	t.Cleanup(func() {
		p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId})
	})
	return resp.PodSandboxId
}

// podInfo is the verbose status of a pod: its record.
type podInfo struct {
	ID         string
	IPs        []string
	Namespaces map[string]string
	Dir        string
	Shm        string
}

func inspectPod(t *testing.T, p *testenv.Pierd, id string) (*runtimeapi.PodSandboxStatus, *podInfo) {
	t.Helper()
	resp, err := p.Runtime.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true})
	if err != nil {
		t.Fatalf("PodSandboxStatus %s: %v", id, err)
	}
	var info podInfo
	if err := json.Unmarshal([]byte(resp.Info["info"]), &info); err != nil {
		t.Fatal(err)
	}
	return resp.Status, &info
}

// inPod runs a busybox applet in the pod's network namespace.
func inPod(netns string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + netns, "/bin/busybox"}, args...)...)
}

func TestPodLifecycleCrictl(t *testing.T) {
	p := startPierd(t, "")
	dir := t.TempDir()
	cfg := `{"metadata":{"name":"web","namespace":"e2e","uid":"uid-crictl","attempt":1},"hostname":"webhost",
		"labels":{"tier":"front"},"log_directory":"` + dir + `",
		"dns_config":{"servers":["10.99.0.10"],"searches":["e2e.svc.cluster.local"],"options":["ndots:5"]},
		"linux":{"cgroup_parent":"/pier-e2e","sysctls":{"net.ipv4.ip_unprivileged_port_start":"0"}}}`
	os.WriteFile(filepath.Join(dir, "pod.json"), []byte(cfg), 0o644)
	out, err := p.Crictl("runp", filepath.Join(dir, "pod.json"))
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out)
	st, info := inspectPod(t, p, id)
	if st.State != runtimeapi.PodSandboxState_SANDBOX_READY || !strings.HasPrefix(st.Network.Ip, "10.99.") || st.Metadata.Attempt != 1 {
		t.Fatalf("status: %v", st)
	}
	files := map[string]string{"resolv.conf": "options ndots:5", "hostname": "webhost", "hosts": st.Network.Ip + "\twebhost"}
	for f, want := range files {
		if b, err := os.ReadFile(filepath.Join(info.Dir, f)); err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s: %q (%v), want %q", f, b, err, want)
		}
	}
	if b, err := inPod(info.Namespaces["net"], "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").Output(); err != nil || strings.TrimSpace(string(b)) != "0" {
		t.Errorf("sysctl in the pod: %q %v", b, err)
	}
	if b, err := exec.Command("nsenter", "--uts="+info.Namespaces["uts"], "hostname").Output(); err != nil || strings.TrimSpace(string(b)) != "webhost" {
		t.Errorf("hostname in the pod: %q %v", b, err)
	}
	if out, err := p.Crictl("pods", "-q", "--label", "tier=front", "--state", "ready"); err != nil || strings.TrimSpace(out) != id {
		t.Fatalf("crictl pods: %q %v", out, err)
	}
	if out, _ := p.Crictl("pods", "-q", "--label", "tier=back"); strings.TrimSpace(out) != "" {
		t.Fatalf("label filter: %q", out)
	}
	if out, err := p.Crictl("inspectp", id[:12]); err != nil || !strings.Contains(out, `"ip": "`+st.Network.Ip) {
		t.Fatalf("inspectp: %v %s", err, out)
	}
	for _, cmd := range [][]string{{"stopp", id}, {"stopp", id}} {
		if _, err := p.Crictl(cmd...); err != nil {
			t.Fatal(err)
		}
	}
	if out, _ := p.Crictl("pods", "-q", "--state", "notready"); strings.TrimSpace(out) != id {
		t.Fatalf("stopped pod not listed as not ready: %q", out)
	}
	if _, err := os.Stat(info.Namespaces["net"]); err == nil {
		t.Error("the network namespace is still pinned after stop")
	}
	if _, err := p.Crictl("rmp", id); err != nil {
		t.Fatal(err)
	}
	if out, _ := p.Crictl("pods", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("pods after rmp: %q", out)
	}
}

func TestPodsReachEachOtherAndHostPort(t *testing.T) {
	p := startPierd(t, "")
	a := runPod(t, p, podConfig("a"))
	cfgB := podConfig("b")
	cfgB.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 18089}}
	b := runPod(t, p, cfgB)
	stA, infoA := inspectPod(t, p, a)
	stB, infoB := inspectPod(t, p, b)
	if out, err := inPod(infoA.Namespaces["net"], "ping", "-c1", "-W2", stB.Network.Ip).CombinedOutput(); err != nil {
		t.Fatalf("pod a cannot reach pod b (%s): %v %s", stB.Network.Ip, err, out)
	}
	if out, err := inPod(infoB.Namespaces["net"], "ping", "-c1", "-W2", stA.Network.Ip).CombinedOutput(); err != nil {
		t.Fatalf("pod b cannot reach pod a: %v %s", err, out)
	}
	// A server in pod b on port 80, reached through hostPort 18089 on the host's loopback.
	srv := inPod(infoB.Namespaces["net"], "nc", "-l", "-p", "80", "-e", "echo", "hello-from-b")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	var got string
	for i := 0; i < 50 && got == ""; i++ {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:18089", time.Second); err == nil {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			got = strings.TrimSpace(string(buf[:n]))
			c.Close()
		}
		if got == "" {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if got != "hello-from-b" {
		t.Fatalf("hostPort 18089: got %q", got)
	}
}

func TestHostNetworkPod(t *testing.T) {
	p := startPierd(t, "")
	before := network.Allocations()
	cfg := podConfig("hostnet")
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}
	id := runPod(t, p, cfg)
	st, info := inspectPod(t, p, id)
	host, _ := os.Hostname()
	if info.Namespaces["net"] != "" || info.Namespaces["uts"] != "" || st.Network.Ip != "" || network.Allocations() != before {
		t.Fatalf("host-network pod got a network: %+v %v", info, st.Network)
	}
	if st.Linux.Namespaces.Options.Network != runtimeapi.NamespaceMode_NODE {
		t.Fatalf("namespace options: %v", st.Linux.Namespaces.Options)
	}
	if b, _ := os.ReadFile(filepath.Join(info.Dir, "hostname")); strings.TrimSpace(string(b)) != host {
		t.Fatalf("hostname %q, want the node's %q", b, host)
	}
}

func TestPodErrors(t *testing.T) {
	p := startPierd(t, "")
	cfg := podConfig("dup")
	id := runPod(t, p, cfg)
	_, err := p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), id) {
		t.Fatalf("second pod with the same metadata: %v", err)
	}
	cases := map[string]struct {
		req  *runtimeapi.RunPodSandboxRequest
		code codes.Code
	}{
		"no config":        {&runtimeapi.RunPodSandboxRequest{}, codes.InvalidArgument},
		"no metadata":      {&runtimeapi.RunPodSandboxRequest{Config: &runtimeapi.PodSandboxConfig{}}, codes.InvalidArgument},
		"unknown handler":  {&runtimeapi.RunPodSandboxRequest{Config: podConfig("h"), RuntimeHandler: "nosuch"}, codes.InvalidArgument},
		"host-wide sysctl": {&runtimeapi.RunPodSandboxRequest{Config: withSysctl(podConfig("s"), "kernel.panic", "1")}, codes.InvalidArgument},
		"bad sysctl value": {&runtimeapi.RunPodSandboxRequest{Config: withSysctl(podConfig("v"), "net.ipv4.ip_forward", "nonsense")}, codes.InvalidArgument},
		"relative cgroup":  {&runtimeapi.RunPodSandboxRequest{Config: withCgroup(podConfig("c"), "kubepods")}, codes.InvalidArgument},
	}
	for name, c := range cases {
		if _, err := p.Runtime.RunPodSandbox(ctx(t), c.req); status.Code(err) != c.code {
			t.Errorf("%s: %v, want %v", name, err, c.code)
		}
	}
	// Stop and remove are idempotent; status of an unknown pod is NotFound.
	for i := 0; i < 2; i++ {
		if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: "nosuchpod"}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: "nosuchpod"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Runtime.PodSandboxStatus(ctx(t), &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "nosuchpod"}); status.Code(err) != codes.NotFound {
		t.Fatalf("status of an unknown pod: %v", err)
	}
	// Removing a running pod stops it first.
	if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
}

func withSysctl(c *runtimeapi.PodSandboxConfig, k, v string) *runtimeapi.PodSandboxConfig {
	c.Linux.Sysctls = map[string]string{k: v}
	return c
}

func withCgroup(c *runtimeapi.PodSandboxConfig, parent string) *runtimeapi.PodSandboxConfig {
	c.Linux.CgroupParent = parent
	return c
}

func TestRuntimeHandlers(t *testing.T) {
	p := startPierd(t, "")
	st, err := p.Runtime.Status(ctx(t), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range st.RuntimeHandlers {
		names = append(names, h.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "runc") {
		t.Fatalf("handlers %v: runc missing", names)
	}
	ready := map[string]bool{}
	for _, c := range st.Status.Conditions {
		ready[c.Type] = c.Status
	}
	if !ready[runtimeapi.RuntimeReady] || !ready[runtimeapi.NetworkReady] {
		t.Fatalf("conditions: %v", st.Status.Conditions)
	}
	if st.Info["cgroupLayout"] == "" || st.Info["cgroupDriver"] == "" {
		t.Errorf("verbose status lacks the cgroup layout and driver: %v", st.Info)
	}
	// No handler that can run containers: the runtime is not ready, and
	// says why, so that kubelet does not mark the node Ready.
	none := startPierd(t, "[runtimes.runc]\npath = \"/bin/false\"\n[runtimes.crun]\npath = \"/bin/false\"\n")
	st, err = none.Runtime.Status(ctx(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Status.Conditions {
		if c.Type == runtimeapi.RuntimeReady && (c.Status || c.Reason == "" || !strings.Contains(c.Message, "runc")) {
			t.Fatalf("runtime condition without a usable handler: %v", c)
		}
	}
	if strings.HasPrefix(st.Info["handler.crun"], "unusable") {
		_, err := p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: podConfig("crun"), RuntimeHandler: "crun"})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), strings.TrimPrefix(st.Info["handler.crun"], "unusable: ")) {
			t.Fatalf("pod on the unusable crun handler: %v", err)
		}
	}
	// Without a network config, the network is not ready, and says why.
	q := startPierd(t, "[cni]\nconf_dir = \""+t.TempDir()+"\"\n")
	st, err = q.Runtime.Status(ctx(t), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Status.Conditions {
		if c.Type == runtimeapi.NetworkReady && (c.Status || c.Reason == "" || c.Message == "") {
			t.Fatalf("network condition without a config: %v", c)
		}
	}
}

// hostState counts what pods leave on the node.
func hostState(t *testing.T) map[string]int {
	t.Helper()
	count := func(name string, args ...string) int {
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return len(strings.Split(strings.TrimSpace(string(out)), "\n"))
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	pier := 0
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, "/pods/") {
			pier++
		}
	}
	return map[string]int{
		"veths":          count("ip", "-o", "link", "show", "type", "veth"),
		"iptables rules": count("iptables-save"),
		"pod mounts":     pier,
		"ip allocations": network.Allocations(),
	}
}

func TestPodCyclesLeaveNothing(t *testing.T) {
	p := startPierd(t, "")
	// The bridge and the shared iptables chains (portmap's CNI-HOSTPORT-*
	// too, made by the first pod with a port mapping) are made once.
	warmup := podConfig("warmup")
	warmup.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_UDP, ContainerPort: 53, HostPort: 18054}}
	runPod(t, p, warmup)
	before := hostState(t)
	for i := 0; i < 50; i++ {
		cfg := podConfig("cycle")
		cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_UDP, ContainerPort: 53, HostPort: 18053}}
		resp, err := p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
			t.Fatal(err)
		}
		if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
			t.Fatal(err)
		}
	}
	after := hostState(t)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: %d before 50 pod cycles, %d after", k, v, after[k])
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(p.Dir, "state", "pods")); len(entries) != 1 {
		t.Errorf("volatile pod directories left: %d, want the warm-up pod's", len(entries))
	}
}

func TestFailingCNIPluginLeavesNothing(t *testing.T) {
	conf := t.TempDir()
	os.WriteFile(filepath.Join(conf, "10-bad.conflist"), []byte(`{"cniVersion":"1.0.0","name":"bad","plugins":[
		{"type":"bridge","bridge":"`+network.Bridge+`","isGateway":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.99.0.0/16"}]],"dataDir":"`+network.DataDir+`"}},
		{"type":"no-such-plugin"}]}`), 0o644)
	p := startPierd(t, "[cni]\nconf_dir = \""+conf+"\"\n")
	before := hostState(t)
	_, err := p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: podConfig("bad")})
	if err == nil || !strings.Contains(err.Error(), "no-such-plugin") {
		t.Fatalf("pod on a failing network: %v", err)
	}
	if after := hostState(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a failed pod left: before %v, after %v", before, after)
	}
	if pods, _ := p.Runtime.ListPodSandbox(ctx(t), &runtimeapi.ListPodSandboxRequest{}); len(pods.Items) != 0 {
		t.Fatalf("a failed pod is listed: %v", pods.Items)
	}
	for _, d := range []string{filepath.Join(p.Dir, "state", "pods"), filepath.Join(p.Root(), "pods")} {
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			t.Errorf("%s holds %d entries", d, len(entries))
		}
	}
}

func TestPodSurvivesKill(t *testing.T) {
	p := startPierd(t, "")
	id := runPod(t, p, podConfig("survivor"))
	st, info := inspectPod(t, p, id)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	st2, _ := inspectPod(t, p, id)
	if st2.State != runtimeapi.PodSandboxState_SANDBOX_READY || st2.Network.Ip != st.Network.Ip || st2.Metadata.Uid != st.Metadata.Uid || st2.CreatedAt != st.CreatedAt {
		t.Fatalf("after a restart: %v, before: %v", st2, st)
	}
	before := network.Allocations()
	if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
	if network.Allocations() != before-1 {
		t.Fatal("the restarted pierd did not release the pod's IP")
	}
	if _, err := os.Stat(info.Namespaces["net"]); err == nil {
		t.Fatal("netns still pinned")
	}
	if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		t.Fatal(err)
	}
}
