package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// RemovePodSandbox removes the pod's containers, stops the pod if needed
// and deletes it; idempotent.
func (s *RuntimeService) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, invalid("RemovePodSandbox: pod sandbox id is empty")
	}
	if sb, err := s.opts.Pods.Get(req.GetPodSandboxId()); err == nil {
		defer s.podCPU.drop(sb.ID) // its last CPU sample (PodSandboxStats)
		for _, id := range s.opts.Containers.InPod(sb.ID) {
			if err := s.opts.Containers.Remove(ctx, id); err != nil {
				return nil, err
			}
		}
	}
	if err := s.opts.Pods.Remove(ctx, req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}
