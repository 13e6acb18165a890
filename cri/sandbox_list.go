package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/sandbox"
)

// ListPodSandbox lists pods, filtered by id, state and labels.
func (s *RuntimeService) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	return &runtimeapi.ListPodSandboxResponse{Items: s.pods(req.GetFilter())}, nil
}

// StreamPodSandboxes is ListPodSandbox in pages (sendPages).
func (s *RuntimeService) StreamPodSandboxes(req *runtimeapi.StreamPodSandboxesRequest, stream runtimeapi.RuntimeService_StreamPodSandboxesServer) error {
	return sendPages(s.pods(req.GetFilter()), func(page []*runtimeapi.PodSandbox) error {
		return stream.Send(&runtimeapi.StreamPodSandboxesResponse{PodSandboxes: page})
	})
}

// pods lists the pods that f selects.
func (s *RuntimeService) pods(f *runtimeapi.PodSandboxFilter) []*runtimeapi.PodSandbox {
	filter := sandbox.Filter{ID: f.GetId(), Labels: f.GetLabelSelector()}
	if st := f.GetState(); st != nil {
		filter.State = sandbox.NotReady
		if st.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			filter.State = sandbox.Ready
		}
	}
	var out []*runtimeapi.PodSandbox
	for _, sb := range s.opts.Pods.List(filter) {
		c := sb.Config
		out = append(out, &runtimeapi.PodSandbox{
			Id: sb.ID, Metadata: podMetadata(c), State: podState(sb.State), CreatedAt: sb.CreatedAt.UnixNano(),
			Labels: c.Labels, Annotations: c.Annotations, RuntimeHandler: c.RuntimeHandler,
		})
	}
	return out
}
