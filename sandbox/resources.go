package sandbox

import (
	"encoding/json"
	"fmt"

	"k8s.io/klog/v2"
)

// PodResources are a pod's resources as kubelet last announced them
// (UpdatePodSandboxResources), each the CRI's LinuxContainerResources as
// protobuf JSON (this package keeps them, the CRI layer reads them).
type PodResources struct {
	// Overhead is what the pod's runtime class adds to its containers'.
	Overhead json.RawMessage `json:"overhead,omitempty"`
	// Resources is the sum of the pod's containers' resources.
	Resources json.RawMessage `json:"resources,omitempty"`
}

// UpdateResources records a pod's resources, as announced before kubelet
// resizes the pod's cgroup (kubelet makes that cgroup and sets its limits
// itself; pier makes none per pod). A pod that is not ready takes them too,
// as containerd and CRI-O record them for any pod they know.
func (m *Manager) UpdateResources(id string, r PodResources) error {
	p, unlock, err := m.lockPod(id)
	if err != nil {
		return err
	}
	defer unlock()
	next := m.current(p).copy()
	next.Resources = &r
	if err := m.save(next); err != nil {
		return fmt.Errorf("record the resources of pod sandbox %s: %w", next.ID, err)
	}
	m.mu.Lock()
	p.sb = next
	m.mu.Unlock()
	klog.V(2).InfoS("Pod sandbox resources updated", "id", next.ID)
	return nil
}
