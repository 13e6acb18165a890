package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// StopPodSandbox kills the pod's containers and releases its network and
// namespaces; idempotent.
func (s *RuntimeService) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("StopPodSandbox: pod sandbox id is empty")
	}
	// The pod's containers are killed first, as kubelet expects.
	if sb, err := s.opts.Pods.Get(req.GetPodSandboxId()); err == nil {
		for _, id := range s.opts.Containers.InPod(sb.ID) {
			if err := s.opts.Containers.Stop(ctx, id, 0); err != nil {
				return nil, err
			}
		}
	}
	if err := s.opts.Pods.Stop(ctx, req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}
