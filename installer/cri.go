package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Runtimes is what the installer asks of the node's CRI runtimes (pier,
// and the one the kubelet used before), by their kubelet endpoints.
type Runtimes interface {
	// Ready returns the runtime's name and version as the kubelet reports
	// it ("pier://0.1.0") and its runtime handlers, once it is ready.
	Ready(ctx context.Context, endpoint string) (version string, handlers []string, err error)
	// RemovePods stops and removes every pod sandbox of the runtime, and
	// returns how many there were; none when nothing serves the endpoint.
	RemovePods(ctx context.Context, endpoint string) (int, error)
	// Pods returns how many pod sandboxes the runtime has.
	Pods(ctx context.Context, endpoint string) (int, error)
}

// criClient reaches the runtimes' sockets under the host's root.
type criClient struct{ h *host }

// NewRuntimes returns the CRI runtimes of the host mounted at hostRoot.
func NewRuntimes(hostRoot string) Runtimes { return criClient{h: &host{root: hostRoot}} }

func (c criClient) dial(endpoint string) (*grpc.ClientConn, error) {
	if strings.Contains(endpoint, "://") && !strings.HasPrefix(endpoint, "unix://") {
		return nil, fmt.Errorf("endpoint %q: only unix sockets are supported", endpoint)
	}
	path := c.h.socket(endpoint)
	return grpc.NewClient("passthrough:///cri",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}))
}

func (c criClient) Ready(ctx context.Context, endpoint string) (string, []string, error) {
	conn, err := c.dial(endpoint)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	var last error
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := rs.Version(actx, &runtimeapi.VersionRequest{})
		var st *runtimeapi.StatusResponse
		if err == nil {
			st, err = rs.Status(actx, &runtimeapi.StatusRequest{})
		}
		cancel()
		if err == nil {
			ready := false
			for _, cond := range st.GetStatus().GetConditions() {
				if cond.Type == runtimeapi.RuntimeReady && cond.Status {
					ready = true
				}
			}
			if ready {
				var hs []string
				for _, h := range st.GetRuntimeHandlers() {
					if h.GetName() != "" {
						hs = append(hs, h.GetName())
					}
				}
				return v.RuntimeName + "://" + v.RuntimeVersion, hs, nil
			}
			err = fmt.Errorf("it is not RuntimeReady")
		}
		last = err
		select {
		case <-ctx.Done():
			return "", nil, fmt.Errorf("the runtime at %s did not become ready: %v", endpoint, last)
		case <-time.After(time.Second):
		}
	}
}

// pods lists the runtime's pod sandboxes.
func pods(ctx context.Context, rs runtimeapi.RuntimeServiceClient) ([]*runtimeapi.PodSandbox, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	list, err := rs.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	return list.GetItems(), err
}

func (c criClient) Pods(ctx context.Context, endpoint string) (int, error) {
	conn, err := c.dial(endpoint)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	items, err := pods(ctx, runtimeapi.NewRuntimeServiceClient(conn))
	return len(items), err
}

func (c criClient) RemovePods(ctx context.Context, endpoint string) (int, error) {
	conn, err := c.dial(endpoint)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	items, err := pods(ctx, rs)
	if err != nil {
		// Nothing serves it (the runtime is gone or stopped): no pods to
		// leave behind there. Any other error is one.
		if _, serr := os.Stat(c.h.socket(endpoint)); errors.Is(serr, fs.ErrNotExist) || status.Code(err) == codes.Unavailable {
			return 0, nil
		}
		return 0, fmt.Errorf("list the pods on %s: %w", endpoint, err)
	}
	for _, p := range items {
		if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			return 0, fmt.Errorf("stop pod %s/%s on %s: %w", p.GetMetadata().GetNamespace(), p.GetMetadata().GetName(), endpoint, err)
		}
		if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id}); err != nil {
			return 0, fmt.Errorf("remove pod %s/%s on %s: %w", p.GetMetadata().GetNamespace(), p.GetMetadata().GetName(), endpoint, err)
		}
	}
	return len(items), nil
}
