package container

import (
	"context"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/sandbox"
)

// Hooks are told of a container's life (NRI plugins), outside the
// manager's lock; each may block for as long as its own timeouts allow.
// pod is the container's pod record, nil if it is gone; c a copy.
type Hooks interface {
	// Block holds off a change of the hooks' audience (a plugin that
	// joins and is told of the containers there are) until unblock:
	// Create holds it from before CreateContainer until the container is
	// published or undone.
	Block() (unblock func())
	// CreateContainer may adjust spec before the runtime gets it; an
	// error fails the create, and the container is undone (StopContainer
	// and RemoveContainer are then told of it).
	CreateContainer(ctx context.Context, pod *sandbox.Sandbox, c *Container, spec *specs.Spec) error
	// StartContainer is told of a start before the runtime's; an error
	// fails it (the container ends exited, reason StartError).
	StartContainer(ctx context.Context, pod *sandbox.Sandbox, c *Container) error
	// UpdateContainer may adjust the resources of an update before they
	// apply; an error fails the update.
	UpdateContainer(ctx context.Context, pod *sandbox.Sandbox, c *Container, res *runtimeapi.LinuxContainerResources) (*runtimeapi.LinuxContainerResources, error)
	// The rest are notifications, whose errors are the hooks' to log.
	// PostCreateContainer follows the runtime's create, PostStartContainer
	// a start, PostUpdateContainer an update; StopContainer follows a
	// container's exit (or the loss of its shim), perhaps more than once;
	// RemoveContainer comes before its files are deleted.
	PostCreateContainer(ctx context.Context, pod *sandbox.Sandbox, c *Container)
	PostStartContainer(ctx context.Context, pod *sandbox.Sandbox, c *Container)
	PostUpdateContainer(ctx context.Context, pod *sandbox.Sandbox, c *Container)
	StopContainer(ctx context.Context, pod *sandbox.Sandbox, c *Container)
	RemoveContainer(ctx context.Context, pod *sandbox.Sandbox, c *Container)
}

// noHooks are the Hooks of a manager given none.
type noHooks struct{}

func (noHooks) Block() func() { return func() {} }
func (noHooks) CreateContainer(context.Context, *sandbox.Sandbox, *Container, *specs.Spec) error {
	return nil
}
func (noHooks) StartContainer(context.Context, *sandbox.Sandbox, *Container) error { return nil }
func (noHooks) UpdateContainer(_ context.Context, _ *sandbox.Sandbox, _ *Container, res *runtimeapi.LinuxContainerResources) (*runtimeapi.LinuxContainerResources, error) {
	return res, nil
}
func (noHooks) PostCreateContainer(context.Context, *sandbox.Sandbox, *Container) {}
func (noHooks) PostStartContainer(context.Context, *sandbox.Sandbox, *Container)  {}
func (noHooks) PostUpdateContainer(context.Context, *sandbox.Sandbox, *Container) {}
func (noHooks) StopContainer(context.Context, *sandbox.Sandbox, *Container)       {}
func (noHooks) RemoveContainer(context.Context, *sandbox.Sandbox, *Container)     {}

// hooks are Options.Hooks, or none.
func (m *Manager) hooks() Hooks {
	if m.opts.Hooks == nil {
		return noHooks{}
	}
	return m.opts.Hooks
}

// podOf is the record of a container's pod for the hooks: nil if it is
// gone, or when no hook would read it (none set; no pods, in tests).
func (m *Manager) podOf(c *Container) *sandbox.Sandbox {
	if m.opts.Hooks == nil || m.opts.Pods == nil {
		return nil
	}
	pod, err := m.opts.Pods.Get(c.PodID)
	if err != nil {
		return nil
	}
	return pod
}

// stoppedHook tells the hooks of a container's exit, or the loss of its
// shim (publish calls it, under mu, for each CONTAINER_STOPPED_EVENT).
func (m *Manager) stoppedHook(c *Container) {
	if m.opts.Hooks == nil {
		return
	}
	go func() { m.opts.Hooks.StopContainer(context.Background(), m.podOf(c), c) }()
}
