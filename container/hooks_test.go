package container

import (
	"context"
	"errors"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/sandbox"
)

// adjustingHooks adjusts a new container's spec with adjust and records
// what they are told.
type adjustingHooks struct {
	noHooks
	adjust func(*specs.Spec) error
	told   []string
}

func (h *adjustingHooks) CreateContainer(_ context.Context, _ *sandbox.Sandbox, _ *Container, spec *specs.Spec) error {
	h.told = append(h.told, "create")
	return h.adjust(spec)
}
func (h *adjustingHooks) StopContainer(context.Context, *sandbox.Sandbox, *Container) {
	h.told = append(h.told, "stop")
}
func (h *adjustingHooks) RemoveContainer(context.Context, *sandbox.Sandbox, *Container) {
	h.told = append(h.told, "remove")
}

// TestAdjust checks what becomes of the hooks' adjustment of a new
// container: adjusted resources are recorded as the container's, a moved
// cgroup is refused, and a refusal tells the hooks the container is gone.
func TestAdjust(t *testing.T) {
	limit := int64(64 << 20)
	newSpec := func() *specs.Spec {
		shares := uint64(512)
		return &specs.Spec{Linux: &specs.Linux{CgroupsPath: "/pier/c1", Resources: &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &shares}}}}
	}
	cfg := &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: 512}}}
	for _, tc := range []struct {
		name    string
		adjust  func(*specs.Spec) error
		err     bool
		told    []string
		current *runtimeapi.LinuxContainerResources
	}{
		{"none", func(*specs.Spec) error { return nil }, false, []string{"create"}, cfg.Linux.Resources},
		{"memory", func(s *specs.Spec) error {
			s.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit}
			return nil
		}, false, []string{"create"}, &runtimeapi.LinuxContainerResources{CpuShares: 512, MemoryLimitInBytes: limit}},
		{"cgroup moved", func(s *specs.Spec) error {
			s.Linux.CgroupsPath = "/elsewhere"
			return nil
		}, true, []string{"create", "stop", "remove"}, nil},
		{"plugin error", func(*specs.Spec) error { return errors.New("no") }, true, []string{"create", "stop", "remove"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &adjustingHooks{adjust: tc.adjust}
			m := &Manager{opts: Options{Hooks: h}}
			c := &Container{ID: "c1", config: cfg}
			err := m.adjust(context.Background(), nil, c, newSpec())
			if (err != nil) != tc.err {
				t.Fatalf("adjust: %v", err)
			}
			if !slices.Equal(h.told, tc.told) {
				t.Errorf("hooks told %q, want %q", h.told, tc.told)
			}
			if tc.current != nil {
				if got := c.CurrentResources(); got.GetMemoryLimitInBytes() != tc.current.GetMemoryLimitInBytes() || got.GetCpuShares() != 512 {
					t.Errorf("current resources %v, want %v", got, tc.current)
				}
			}
		})
	}
}
