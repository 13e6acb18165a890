package container

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCheckResources(t *testing.T) {
	good := []*runtimeapi.LinuxContainerResources{
		nil,
		{},
		// What kubelet sends for a Burstable container on cgroup v2.
		{CpuShares: 102, CpuQuota: 20000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20, OomScoreAdj: 999,
			HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB"}, {PageSize: "1GB"}},
			Unified:        map[string]string{"memory.oom.group": "1", "memory.swap.max": "0", "hugetlb.2MB.max": "max"}},
		{CpuQuota: -1, MemorySwapLimitInBytes: -1, CpusetCpus: "0-1,3", CpusetMems: "0"},
	}
	for _, r := range good {
		if err := CheckResources(r); err != nil {
			t.Errorf("%v: %v", r, err)
		}
	}
	bad := map[string]*runtimeapi.LinuxContainerResources{
		"negative memory":    {MemoryLimitInBytes: -1},
		"swap below -1":      {MemorySwapLimitInBytes: -2},
		"shares":             {CpuShares: 1},
		"too many shares":    {CpuShares: 1 << 20},
		"quota":              {CpuQuota: 999},
		"negative quota":     {CpuQuota: -2},
		"period":             {CpuPeriod: 999},
		"long period":        {CpuPeriod: 1000001},
		"oom score":          {OomScoreAdj: 1001},
		"cpuset":             {CpusetCpus: "1-"},
		"mems":               {CpusetMems: "a"},
		"page size":          {HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2mb"}}},
		"page size twice":    {HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB"}, {PageSize: "2MB"}}},
		"unified path":       {Unified: map[string]string{"../cgroup.procs": "1"}},
		"unified slash":      {Unified: map[string]string{"memory/max": "1"}},
		"unified dotdot":     {Unified: map[string]string{"memory..max": "1"}},
		"unified no dot":     {Unified: map[string]string{"cgroup": "1"}},
		"unified newline":    {Unified: map[string]string{"memory.max": "1\n2"}},
		"too many hugepages": {HugepageLimits: make([]*runtimeapi.HugepageLimit, maxHugepageLimits+1)},
		"too many unified":   {Unified: manyKeys(maxUnifiedKeys + 1)},
	}
	for name, r := range bad {
		if err := CheckResources(r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

func manyKeys(n int) map[string]string {
	m := map[string]string{}
	for i := range n {
		m["memory.k"+string(rune('a'+i%26))+string(rune('a'+i/26))] = "1"
	}
	return m
}

func TestMergeResources(t *testing.T) {
	cur := &runtimeapi.LinuxContainerResources{
		CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20, CpusetCpus: "0",
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}, {PageSize: "1GB"}},
		Unified:        map[string]string{"memory.oom.group": "1"},
	}
	kept := proto.Clone(cur)
	got := mergeResources(cur, &runtimeapi.LinuxContainerResources{
		CpuQuota: 150000, MemoryLimitInBytes: 128 << 20,
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 8 << 20}, {PageSize: "64KB", Limit: 1}},
		Unified:        map[string]string{"memory.swap.max": "0"},
	})
	want := &runtimeapi.LinuxContainerResources{
		CpuShares: 512, CpuQuota: 150000, CpuPeriod: 100000, MemoryLimitInBytes: 128 << 20, CpusetCpus: "0",
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 8 << 20}, {PageSize: "1GB"}, {PageSize: "64KB", Limit: 1}},
		Unified:        map[string]string{"memory.oom.group": "1", "memory.swap.max": "0"},
	}
	if !proto.Equal(got, want) {
		t.Errorf("merged\n got %v\nwant %v", got, want)
	}
	if !proto.Equal(cur, kept) {
		t.Errorf("the current resources changed: %v", cur)
	}
	if got := mergeResources(nil, &runtimeapi.LinuxContainerResources{CpuShares: 2}); got.GetCpuShares() != 2 {
		t.Errorf("merged onto none: %v", got)
	}
}
