package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/sandbox"
)

// ListPodSandbox lists pods, filtered by id, state and labels.
func (s *RuntimeService) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	filter := sandbox.Filter{ID: f.GetId(), Labels: f.GetLabelSelector()}
	if st := f.GetState(); st != nil {
		filter.State = sandbox.NotReady
		if st.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			filter.State = sandbox.Ready
		}
	}
	resp := &runtimeapi.ListPodSandboxResponse{}
	for _, sb := range s.opts.Pods.List(filter) {
		c := sb.Config
		resp.Items = append(resp.Items, &runtimeapi.PodSandbox{
			Id: sb.ID, Metadata: podMetadata(c), State: podState(sb.State), CreatedAt: sb.CreatedAt.UnixNano(),
			Labels: c.Labels, Annotations: c.Annotations, RuntimeHandler: c.RuntimeHandler,
		})
	}
	return resp, nil
}
