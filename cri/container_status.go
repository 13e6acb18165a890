package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ContainerStatus returns a container's status; verbose adds its record.
func (s *RuntimeService) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	c, err := s.opts.Containers.Get(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	_, def := s.handlers()
	resp := &runtimeapi.ContainerStatusResponse{Status: containerStatus(c, def)}
	if r := c.CurrentResources(); r != nil {
		resp.Status.Resources = &runtimeapi.ContainerResources{Linux: r}
	}
	if req.GetVerbose() {
		if resp.Info, err = s.containerVerboseInfo(ctx, c); err != nil {
			return nil, err
		}
	}
	return resp, nil
}
