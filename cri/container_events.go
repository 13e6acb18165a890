package cri

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/events"
)

// GetContainerEvents streams the container and pod sandbox events (package
// events) from the moment it is called until the client goes away. A
// client that falls more than events.Buffer events behind has its stream
// ended with ResourceExhausted: it lost events, and must list again.
func (s *RuntimeService) GetContainerEvents(req *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	sub := s.opts.Events.Subscribe()
	defer sub.Close()
	for {
		e, err := sub.Next(stream.Context())
		if errors.Is(err, events.ErrLost) {
			return status.Error(codes.ResourceExhausted, err.Error())
		}
		if errors.Is(err, events.ErrClosed) {
			return status.Error(codes.Unavailable, err.Error())
		}
		if err != nil {
			return err
		}
		if err := stream.Send(s.eventResponse(e)); err != nil {
			return err
		}
	}
}

// eventResponse is the CRI form of e: the pod's and its containers'
// statuses as of the event; for a pod's own event, its containers' as
// they are now.
func (s *RuntimeService) eventResponse(e events.Event) *runtimeapi.ContainerEventResponse {
	resp := &runtimeapi.ContainerEventResponse{ContainerId: e.ID, ContainerEventType: e.Type, CreatedAt: e.At.UnixNano()}
	if e.Pod != nil {
		resp.PodSandboxStatus = podStatus(e.Pod)
	}
	cs := e.Containers
	if e.PodEvent {
		cs = s.opts.Containers.List(container.Filter{PodID: e.ID}) // a prefix
	}
	_, def := s.handlers()
	for _, c := range cs {
		if !e.PodEvent || c.PodID == e.ID {
			resp.ContainersStatuses = append(resp.ContainersStatuses, containerStatus(c, def))
		}
	}
	return resp
}
