package nri

import (
	"testing"

	"github.com/containerd/nri/pkg/api"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/sandbox"
)

// TestResources checks that CRI resources reach plugins unchanged and
// that what a plugin sets replaces only those fields.
func TestResources(t *testing.T) {
	cri := &runtimeapi.LinuxContainerResources{
		CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 1 << 30,
		CpusetCpus: "0-1", CpusetMems: "0", Unified: map[string]string{"memory.high": "max"},
		HugepageLimits:         []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 0}},
		MemorySwapLimitInBytes: 1 << 30,
	}
	if back := withNRIResources(nil, nriResources(cri)); !proto.Equal(back, cri) {
		t.Errorf("round trip:\n got %v\nwant %v", back, cri)
	}
	u := &api.LinuxResources{
		Memory:         &api.LinuxMemory{Limit: api.Int64(64 << 20)},
		Cpu:            &api.LinuxCPU{Cpus: "1"},
		HugepageLimits: []*api.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}, {PageSize: "1GB", Limit: 0}},
	}
	got := withNRIResources(cri, u)
	want := proto.Clone(cri).(*runtimeapi.LinuxContainerResources)
	want.MemoryLimitInBytes, want.CpusetCpus = 64<<20, "1"
	want.HugepageLimits = []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}, {PageSize: "1GB", Limit: 0}}
	if !proto.Equal(got, want) {
		t.Errorf("adjusted:\n got %v\nwant %v", got, want)
	}
	if cri.MemoryLimitInBytes != 1<<30 || cri.HugepageLimits[0].Limit != 0 {
		t.Error("withNRIResources changed its argument")
	}
}

// TestPodSandbox checks what plugins are told of a pod.
func TestPodSandbox(t *testing.T) {
	sb := &sandbox.Sandbox{
		ID: "p1", IPs: []string{"10.0.0.2"}, InitPid: 42,
		Namespaces: map[string]string{"net": "/run/pier/pods/p1/ns/net", "ipc": "/run/pier/pods/p1/ns/ipc"},
		Config: sandbox.Config{Name: "web", Namespace: "default", UID: "u1", RuntimeHandler: "runc",
			Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"a": "b"}, CgroupParent: "/kubepods/pod-u1"},
	}
	p := podSandbox(sb)
	if p.GetId() != "p1" || p.GetName() != "web" || p.GetNamespace() != "default" || p.GetUid() != "u1" ||
		p.GetRuntimeHandler() != "runc" || p.GetLabels()["app"] != "web" || p.GetAnnotations()["a"] != "b" ||
		p.GetPid() != 42 || p.GetIps()[0] != "10.0.0.2" || p.GetLinux().GetCgroupParent() != "/kubepods/pod-u1" {
		t.Errorf("pod: %v", p)
	}
	ns := p.GetLinux().GetNamespaces()
	if len(ns) != 2 || ns[0].GetType() != "ipc" || ns[1].GetType() != "network" || ns[1].GetPath() != "/run/pier/pods/p1/ns/net" {
		t.Errorf("namespaces: %v", ns)
	}
	if podSandbox(nil) != nil {
		t.Error("a gone pod is not nil")
	}
}
