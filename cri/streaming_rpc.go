package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/container"
)

// Exec returns the URL of the streaming server where the client runs the
// command interactively.
func (s *RuntimeService) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if len(req.GetCmd()) == 0 {
		return nil, invalid("Exec: no command")
	}
	if !req.GetStdout() && !req.GetStderr() && !req.GetStdin() {
		return nil, invalid("Exec: one of stdin, stdout and stderr must be set")
	}
	if err := s.running(req.GetContainerId()); err != nil {
		return nil, err
	}
	return s.opts.Stream.GetExec(req)
}

// Attach returns the URL of the streaming server where the client attaches
// to the container.
func (s *RuntimeService) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if !req.GetStdout() && !req.GetStderr() && !req.GetStdin() {
		return nil, invalid("Attach: one of stdin, stdout and stderr must be set")
	}
	if err := s.running(req.GetContainerId()); err != nil {
		return nil, err
	}
	return s.opts.Stream.GetAttach(req)
}

// PortForward returns the URL of the streaming server where the client
// forwards ports to the pod.
func (s *RuntimeService) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	if _, err := s.opts.Pods.Get(req.GetPodSandboxId()); err != nil {
		return nil, err
	}
	return s.opts.Stream.GetPortForward(req)
}

// running checks that a container exists and runs.
func (s *RuntimeService) running(id string) error {
	c, err := s.opts.Containers.Get(id)
	if err != nil {
		return err
	}
	if c.State != container.Running {
		return invalidState("container %s is not running", c.ID)
	}
	return nil
}
