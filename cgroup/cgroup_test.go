package cgroup

import (
	"errors"
	"testing"

	"github.com/containerd/cgroups/v3"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestExpandSlice(t *testing.T) {
	for in, want := range map[string]string{
		"-.slice":                          "/",
		"pier.slice":                       "/pier.slice",
		"kubepods-burstable-pod1_2.slice":  "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1_2.slice",
		"kubepods-besteffort-podab.slice":  "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab.slice",
		"system.slice":                     "/system.slice",
		"kubepods.slice":                   "/kubepods.slice",
		"kubepods-pod0f1e2d3c_4b5a.slice":  "/kubepods.slice/kubepods-pod0f1e2d3c_4b5a.slice",
		"a-b-c-d.slice":                    "/a.slice/a-b.slice/a-b-c.slice/a-b-c-d.slice",
		"kubepods-burstable-pod1_2.slice ": "",
		"kubepods":                         "",
		".slice":                           "",
		"-a.slice":                         "",
		"a-.slice":                         "",
		"a--b.slice":                       "",
		"../x.slice":                       "",
		"/kubepods/pod1":                   "",
	} {
		got, err := ExpandSlice(in)
		if want == "" {
			if err == nil {
				t.Errorf("ExpandSlice(%q) = %q, want an error", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("ExpandSlice(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestContainerPaths(t *testing.T) {
	fs := &Node{Driver: Cgroupfs}
	sd := &Node{Driver: Systemd}
	for _, tc := range []struct {
		n       *Node
		parent  string
		runtime string
		dir     string
	}{
		{fs, "/kubepods/burstable/pod1", "/kubepods/burstable/pod1/c1", "/kubepods/burstable/pod1/c1"},
		{fs, "", "/pier/c1", "/pier/c1"},
		{sd, "kubepods-burstable-pod1.slice", "kubepods-burstable-pod1.slice:pier:c1", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/pier-c1.scope"},
		{sd, "", "pier.slice:pier:c1", "/pier.slice/pier-c1.scope"},
		// kubelet sends a systemd parent as the slice's path.
		{sd, "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice", "kubepods-burstable-pod1.slice:pier:c1", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/pier-c1.scope"},
	} {
		p := tc.n.Container(tc.parent, "c1")
		if p.Runtime != tc.runtime || p.Dir != tc.dir {
			t.Errorf("%s: Container(%q) = %+v, want {%s %s}", tc.n.Driver, tc.parent, p, tc.runtime, tc.dir)
		}
	}
}

func TestCheckParent(t *testing.T) {
	fs := &Node{Driver: Cgroupfs}
	sd := &Node{Driver: Systemd}
	for _, tc := range []struct {
		n      *Node
		parent string
		ok     bool
	}{
		{fs, "", true},
		{fs, "/kubepods/pod1", true},
		{fs, "kubepods-pod1.slice", false},
		{fs, "/kubepods/../../etc", false},
		{fs, "relative/path", false},
		{sd, "", true},
		{sd, "kubepods-pod1.slice", true},
		{sd, "/kubepods/pod1", false},
		{sd, "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice", true},
		{sd, "kubepods.slice/kubepods-pod1.slice", false},
		{sd, "/kubepods.slice/../kubepods-pod1.slice", false},
		{sd, "/kubepods.slice/", false},
		{sd, "kubepods", false},
		{sd, "a/../b.slice", false},
	} {
		err := tc.n.CheckParent(tc.parent)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: CheckParent(%q) = %v, want ok=%v", tc.n.Driver, tc.parent, err, tc.ok)
		}
	}
}

func TestFitDropsWhatTheNodeLacks(t *testing.T) {
	// This machine's kind: hybrid, hugetlb only on the v2 hierarchy.
	n := &Node{Mode: cgroups.Hybrid, Driver: Cgroupfs, Controllers: map[string]bool{"cpu": true, "cpuset": true, "memory": true, "pids": true, "blkio": true}}
	limit, swap, shares := int64(64<<20), int64(64<<20), uint64(512)
	r := &specs.LinuxResources{
		Memory:         &specs.LinuxMemory{Limit: &limit, Swap: &swap},
		CPU:            &specs.LinuxCPU{Shares: &shares, Cpus: "0"},
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 0}, {Pagesize: "1GB", Limit: 0}},
	}
	for range 3 {
		if err := n.Fit(r); err != nil {
			t.Fatal(err)
		}
	}
	if r.HugepageLimits != nil {
		t.Errorf("hugepage limits kept without a v1 hugetlb hierarchy: %v", r.HugepageLimits)
	}
	if r.Memory == nil || r.Memory.Limit == nil || *r.Memory.Limit != limit {
		t.Errorf("memory limit lost: %+v", r.Memory)
	}
	if r.Memory.Swap != nil {
		t.Errorf("swap limit kept without swap accounting")
	}
	if r.CPU == nil || r.CPU.Shares == nil || r.CPU.Cpus != "0" {
		t.Errorf("CPU limits lost: %+v", r.CPU)
	}
	warned := 0
	n.warned.Range(func(any, any) bool { warned++; return true })
	if warned != 2 {
		t.Errorf("warned for %d controllers, want 2 (hugetlb, swap)", warned)
	}

	r = &specs.LinuxResources{Unified: map[string]string{"memory.high": "1000000"}}
	if err := n.Fit(r); !errors.Is(err, ErrInvalid) {
		t.Errorf("unified keys on a hybrid node: %v, want ErrInvalid", err)
	}
	v2 := &Node{Mode: cgroups.Unified, Driver: Systemd, Controllers: map[string]bool{"cpu": true, "memory": true, "hugetlb": true, "pids": true, "io": true, "swap": true}}
	r = &specs.LinuxResources{Unified: map[string]string{"memory.high": "1000000"}, HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB"}}}
	if err := v2.Fit(r); err != nil || len(r.HugepageLimits) != 1 || len(r.Unified) != 1 {
		t.Errorf("v2 node dropped what it has: %v %+v", err, r)
	}
}

func TestDetectThisNode(t *testing.T) {
	n, err := Detect(Cgroupfs)
	if err != nil {
		t.Skipf("no cgroups here: %v", err)
	}
	if n.Driver != Cgroupfs || len(n.Controllers) == 0 {
		t.Errorf("Detect = %+v", n)
	}
	if _, err := Detect("upstart"); err == nil {
		t.Error("Detect accepted an unknown driver")
	}
	t.Logf("layout %s, controllers %v", n.Layout(), n.Info()["cgroupControllers"])
}
