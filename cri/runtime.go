package cri

import (
	"context"
	"sync"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// RuntimeService serves the CRI RuntimeService. Pod and container RPCs
// answer Unimplemented until pier runs them.
type RuntimeService struct {
	runtimeapi.UnimplementedRuntimeServiceServer

	version      string
	cgroupDriver runtimeapi.CgroupDriver

	mu      sync.Mutex
	podCIDR string
}

// NewRuntimeService returns the runtime service of pier version, reporting
// cgroupDriver to kubelet.
func NewRuntimeService(version string, cgroupDriver runtimeapi.CgroupDriver) *RuntimeService {
	return &RuntimeService{version: version, cgroupDriver: cgroupDriver}
}

// Version reports pier's name and version and the CRI API version.
func (s *RuntimeService) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           "0.1.0",
		RuntimeName:       "pier",
		RuntimeVersion:    s.version,
		RuntimeApiVersion: "v1",
	}, nil
}

// Status reports the runtime ready and the network not ready: pier has no
// pod networking yet.
func (s *RuntimeService) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	return &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true},
		{Type: runtimeapi.NetworkReady, Status: false, Reason: "NetworkPluginNotReady", Message: "pier does not set up pod networks yet"},
	}}}, nil
}

// RuntimeConfig tells kubelet which cgroup driver pier uses.
func (s *RuntimeService) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: s.cgroupDriver}}, nil
}

// UpdateRuntimeConfig records the node's pod CIDR that kubelet sends.
func (s *RuntimeService) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	cidr := req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()
	if cidr == "" {
		return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cidr != s.podCIDR {
		klog.InfoS("Pod CIDR updated", "podCIDR", cidr)
		s.podCIDR = cidr
	}
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}
