package sandbox

import (
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// EventFunc is told of a pod sandbox's own event (Options.OnEvent): its
// type and the pod's record as of the change. The CRI names a pod's events
// as a container's, with the pod's id for the container's, as containerd
// and CRI-O send them.
type EventFunc func(t runtimeapi.ContainerEventType, sb *Sandbox)

// publish tells Options.OnEvent of a change of a pod, once it is recorded.
// The caller holds mu (a pod made) or the pod's op lock (the changes of a
// pod that exists), so that a pod's events come in the order of its
// changes.
func (m *Manager) publish(t runtimeapi.ContainerEventType, sb *Sandbox) {
	if m.opts.OnEvent != nil {
		m.opts.OnEvent(t, sb.copy())
	}
}

// publishRun publishes a pod that RunPodSandbox made: created and started.
func (m *Manager) publishRun(sb *Sandbox) {
	m.publish(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, sb)
	m.publish(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, sb)
}

// publishStop publishes a pod recorded not ready.
func (m *Manager) publishStop(sb *Sandbox) {
	m.publish(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, sb)
}

// publishRemove publishes a pod removed.
func (m *Manager) publishRemove(sb *Sandbox) {
	m.publish(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, sb)
}
