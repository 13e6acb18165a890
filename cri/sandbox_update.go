package cri

import (
	"context"
	"encoding/json"

	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/sandbox"
)

// UpdatePodSandboxResources records the pod's resources that kubelet
// announces before it resizes the pod's cgroup, which kubelet owns and
// sets itself; a verbose PodSandboxStatus shows them.
func (s *RuntimeService) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	overhead, err := podResourcesJSON(req.GetOverhead())
	if err != nil {
		return nil, err
	}
	resources, err := podResourcesJSON(req.GetResources())
	if err != nil {
		return nil, err
	}
	if err := s.opts.Pods.UpdateResources(req.GetPodSandboxId(), sandbox.PodResources{Overhead: overhead, Resources: resources}); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdatePodSandboxResourcesResponse{}, nil
}

// podResourcesJSON checks resources and returns them as protobuf JSON;
// nil for none.
func podResourcesJSON(r *runtimeapi.LinuxContainerResources) (json.RawMessage, error) {
	if r == nil {
		return nil, nil
	}
	if err := container.CheckResources(r); err != nil {
		return nil, err
	}
	return protojson.Marshal(r)
}
