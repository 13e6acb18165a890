package container

import (
	"slices"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/sandbox"
)

// EventFunc is told of a change of a container's state that the CRI
// reports as a container event (Options.OnEvent): its type, the
// container's id, its pod's record (nil if gone) and copies of the pod's
// containers, all as of the change.
type EventFunc func(t runtimeapi.ContainerEventType, id string, pod *sandbox.Sandbox, containers []*Container)

// publish tells Options.OnEvent of a change of c's state, once it is
// recorded. The caller holds mu: events come in the order of the changes.
func (m *Manager) publish(t runtimeapi.ContainerEventType, c *Container) {
	if t == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
		m.stoppedHook(c.copy())
	}
	if m.opts.OnEvent == nil {
		return
	}
	var pod *sandbox.Sandbox
	if m.opts.Pods != nil { // nil in tests
		pod, _ = m.opts.Pods.Get(c.PodID)
	}
	var cs []*Container
	for _, o := range m.containers {
		if o.PodID == c.PodID {
			cs = append(cs, o.copy())
		}
	}
	slices.SortFunc(cs, func(a, b *Container) int { return a.CreatedAt.Compare(b.CreatedAt) })
	m.opts.OnEvent(t, c.ID, pod, cs)
}

// publishExit publishes a container's recorded exit (or the loss of its
// shim), unless a StartContainer still runs for it: Start then publishes
// the start and the exit, in that order.
func (m *Manager) publishExit(c *Container) {
	if l := m.live[c.ID]; l != nil && l.starting && c.StartedAt.IsZero() {
		return
	}
	m.publish(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, c)
}
