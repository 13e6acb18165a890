package cni

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/libcni"
)

// CachedResult is the result of the pod's CNI ADD on its interface, as
// libcni cached it (CNI result JSON: interfaces, IPs, routes, DNS), or nil
// when nothing is cached (a pod on the host's network, or torn down).
// It reads one cache file; it runs no plugin.
func (m *Manager) CachedResult(podID string) (json.RawMessage, error) {
	atts, err := m.cni.GetCachedAttachments(podID)
	if err != nil {
		return nil, fmt.Errorf("cni: read cache: %w", err)
	}
	for _, a := range atts {
		if a.IfName != ifName {
			continue
		}
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil {
			return nil, fmt.Errorf("network %q: cached config: %w", a.Network, err)
		}
		res, err := m.cni.GetNetworkListCachedResult(list, &libcni.RuntimeConf{ContainerID: podID, IfName: a.IfName})
		if err != nil || res == nil {
			return nil, err
		}
		return json.Marshal(res)
	}
	return nil, nil
}
