package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// sameFile reports whether two paths name the same file (namespaces:
// the same namespace).
func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(a, &sa); err != nil {
		t.Fatalf("stat %s: %v", a, err)
	}
	if err := syscall.Stat(b, &sb); err != nil {
		t.Fatalf("stat %s: %v", b, err)
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// TestInspectCrictl: crictl inspect shows a running container's host pid,
// its OCI spec and its pod's id, as with containerd; crictl inspectp
// shows the pod's namespaces and its CNI result.
func TestInspectCrictl(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	pod := podConfig("inspect")
	pod.LogDirectory = t.TempDir()
	pod.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD}}
	podID := runPod(t, p, pod)
	id := startContainer(t, p, podID, pod, containerConfig("inspected", "sleep", "4321"))

	out, err := p.Crictl("inspect", id)
	if err != nil {
		t.Fatal(err)
	}
	var inspect struct {
		Info struct {
			Pid         int
			ShimPid     int
			SandboxID   string
			RuntimeSpec *specs.Spec
		}
	}
	if err := json.Unmarshal([]byte(out), &inspect); err != nil {
		t.Fatalf("crictl inspect: %v\n%s", err, out)
	}
	info := inspect.Info
	if info.SandboxID != podID {
		t.Errorf("info.sandboxID %q, want the pod's id %q", info.SandboxID, podID)
	}
	if info.ShimPid <= 0 {
		t.Errorf("info.shimPid missing")
	}
	if info.RuntimeSpec == nil || info.RuntimeSpec.Process == nil || !slices.Equal(info.RuntimeSpec.Process.Args, []string{"sleep", "4321"}) {
		t.Errorf("info.runtimeSpec is not the container's OCI spec: %s", out)
	}
	if info.Pid <= 0 {
		t.Fatalf("info.pid missing: %s", out)
	}
	// The host pid is the container's init: its command, in the pod's
	// network namespace, the pod's pid namespace, usable with nsenter -t.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", info.Pid))
	if err != nil || string(cmdline) != "sleep\x004321\x00" {
		t.Fatalf("info.pid %d is not the container's init: %q, %v", info.Pid, cmdline, err)
	}
	_, podInfo := inspectPod(t, p, podID)
	if !sameFile(t, fmt.Sprintf("/proc/%d/ns/net", info.Pid), podInfo.Namespaces["net"]) {
		t.Errorf("info.pid %d is not in the pod's network namespace", info.Pid)
	}

	out, err = p.Crictl("inspectp", podID)
	if err != nil {
		t.Fatal(err)
	}
	var inspectp struct {
		Status struct{ Network struct{ IP string } }
		Info   struct {
			InitPid    int
			Namespaces map[string]string
			CNIResult  struct {
				CNIVersion string
				Interfaces []struct{ Name, Sandbox string }
				IPs        []struct{ Address string }
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &inspectp); err != nil {
		t.Fatalf("crictl inspectp: %v\n%s", err, out)
	}
	pinfo := inspectp.Info
	for _, ns := range []string{"net", "ipc", "uts", "pid"} {
		if pinfo.Namespaces[ns] == "" {
			t.Errorf("inspectp: no %s namespace in %v", ns, pinfo.Namespaces)
		}
	}
	for ns, path := range map[string]string{"net": "net", "ipc": "ipc", "uts": "uts", "pid": "pid"} {
		if p := pinfo.Namespaces[ns]; p != "" && !sameFile(t, p, fmt.Sprintf("/proc/%d/ns/%s", info.Pid, path)) {
			t.Errorf("inspectp: %s namespace %s is not the container's", ns, p)
		}
	}
	if pinfo.InitPid <= 0 || pinfo.Namespaces["pid"] != fmt.Sprintf("/proc/%d/ns/pid", pinfo.InitPid) {
		t.Errorf("inspectp: pod init pid %d, pid namespace %q", pinfo.InitPid, pinfo.Namespaces["pid"])
	}
	var top struct{ Info map[string]json.RawMessage }
	json.Unmarshal([]byte(out), &top)
	if _, ok := top.Info["pid"]; ok {
		t.Errorf("inspectp shows a pod pid, whose network namespace is not the pod's:\n%s", out)
	}
	ip := inspectp.Status.Network.IP
	found := false
	for _, a := range pinfo.CNIResult.IPs {
		found = found || strings.HasPrefix(a.Address, ip+"/")
	}
	if ip == "" || !found || pinfo.CNIResult.CNIVersion == "" {
		t.Errorf("inspectp: CNI result %+v does not hold the pod's IP %q:\n%s", pinfo.CNIResult, ip, out)
	}
	podNet := false
	for _, i := range pinfo.CNIResult.Interfaces {
		podNet = podNet || i.Name == "eth0" && i.Sandbox == pinfo.Namespaces["net"]
	}
	if !podNet {
		t.Errorf("inspectp: no eth0 in the pod's network namespace in %+v", pinfo.CNIResult.Interfaces)
	}

	// Exited: no pid, the spec stays.
	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	resp, err := p.Runtime.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	var exited map[string]json.RawMessage
	if err := json.Unmarshal([]byte(resp.Info["info"]), &exited); err != nil {
		t.Fatal(err)
	}
	if _, ok := exited["pid"]; ok {
		t.Errorf("an exited container has info.pid %s", exited["pid"])
	}
	if _, ok := exited["runtimeSpec"]; !ok {
		t.Errorf("an exited container lost info.runtimeSpec")
	}
}
