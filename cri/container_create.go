package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// CreateContainer creates a container in a pod sandbox.
func (s *RuntimeService) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	if req.GetConfig() == nil {
		return nil, invalid("CreateContainer: config is missing")
	}
	if req.GetPodSandboxId() == "" {
		return nil, invalid("CreateContainer: pod sandbox id is empty")
	}
	c, err := s.opts.Containers.Create(ctx, req.GetPodSandboxId(), req.GetConfig())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.CreateContainerResponse{ContainerId: c.ID}, nil
}
