package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RunPodSandbox creates the pod's namespaces, network and files.
func (s *RuntimeService) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	if req.GetConfig() == nil {
		return nil, invalid("RunPodSandbox: config is missing")
	}
	handler, err := s.handler(req.GetRuntimeHandler())
	if err != nil {
		return nil, err
	}
	sb, err := s.opts.Pods.Run(ctx, sandboxConfig(req.GetConfig(), handler))
	if err != nil {
		return nil, err
	}
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: sb.ID}, nil
}
