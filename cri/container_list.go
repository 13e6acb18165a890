package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/container"
)

// ListContainers lists containers, filtered by id, pod, state and labels.
func (s *RuntimeService) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := req.GetFilter()
	filter := container.Filter{ID: f.GetId(), PodID: f.GetPodSandboxId(), Labels: f.GetLabelSelector()}
	if st := f.GetState(); st != nil {
		filter.State = container.State(st.State.String())
	}
	resp := &runtimeapi.ListContainersResponse{}
	for _, c := range s.opts.Containers.List(filter) {
		resp.Containers = append(resp.Containers, toContainer(c))
	}
	return resp, nil
}
