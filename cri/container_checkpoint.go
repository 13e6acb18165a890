package cri

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/container"
)

// maxCheckpointTimeout bounds the timeout a CheckpointContainer may ask
// for (kubelet's default is none: 0, pier's default).
const maxCheckpointTimeout = 24 * time.Hour

// CheckpointContainer checkpoints a running container with CRIU into an
// archive at the request's location and leaves it running (kubelet's
// checkpoint API, ContainerCheckpoint).
func (s *RuntimeService) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	t := req.GetTimeout()
	if t < 0 || t > int64(maxCheckpointTimeout/time.Second) {
		return nil, invalid("checkpoint timeout %d s is not between 0 (the default, %v) and %d s", t, container.DefaultCheckpointTimeout, int64(maxCheckpointTimeout/time.Second))
	}
	if err := s.opts.Containers.Checkpoint(ctx, req.GetContainerId(), req.GetLocation(), time.Duration(t)*time.Second); err != nil {
		return nil, err
	}
	return &runtimeapi.CheckpointContainerResponse{}, nil
}
