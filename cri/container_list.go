package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/container"
)

// ListContainers lists containers, filtered by id, pod, state and labels.
func (s *RuntimeService) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	return &runtimeapi.ListContainersResponse{Containers: s.containers(req.GetFilter())}, nil
}

// StreamContainers is ListContainers in pages (sendPages).
func (s *RuntimeService) StreamContainers(req *runtimeapi.StreamContainersRequest, stream runtimeapi.RuntimeService_StreamContainersServer) error {
	return sendPages(s.containers(req.GetFilter()), func(page []*runtimeapi.Container) error {
		return stream.Send(&runtimeapi.StreamContainersResponse{Containers: page})
	})
}

// containers lists the containers that f selects, oldest first.
func (s *RuntimeService) containers(f *runtimeapi.ContainerFilter) []*runtimeapi.Container {
	filter := container.Filter{ID: f.GetId(), PodID: f.GetPodSandboxId(), Labels: f.GetLabelSelector()}
	if st := f.GetState(); st != nil {
		filter.State = container.State(st.State.String())
	}
	var out []*runtimeapi.Container
	_, def := s.handlers()
	for _, c := range s.opts.Containers.List(filter) {
		out = append(out, toContainer(c, def))
	}
	return out
}
