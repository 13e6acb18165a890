package cri

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/container"
)

// UpdateContainerResources changes a created or running container's
// cgroup limits through its runtime (kubelet's in-place pod resize). A
// memory limit below what the container uses is FailedPrecondition.
func (s *RuntimeService) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	if req.GetLinux() == nil {
		return nil, invalid("no linux resources to update (windows resources do not apply on Linux)")
	}
	err := s.opts.Containers.UpdateResources(ctx, req.GetContainerId(), req.GetLinux())
	if errors.Is(err, container.ErrBelowUsage) {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	if err != nil {
		return nil, err
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}
