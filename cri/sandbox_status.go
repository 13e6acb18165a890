package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodSandboxStatus returns a pod's status; verbose adds its record as JSON.
func (s *RuntimeService) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	sb, err := s.opts.Pods.Get(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: podStatus(sb)}
	if req.GetVerbose() {
		if resp.Info, err = s.podVerboseInfo(sb); err != nil {
			return nil, err
		}
	}
	return resp, nil
}
