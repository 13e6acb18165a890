package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"
)

// systemd is pierd's side of systemd's notification protocol (Type=notify,
// sd_notify): READY=1 once the CRI socket answers, STOPPING=1 at shutdown,
// and, when the unit sets WatchdogSec=, WATCHDOG=1 at half that interval
// while pierd is healthy. Without NOTIFY_SOCKET (no systemd, or another
// service type) it sends nothing.
//
// Healthy means that a new connection to the CRI socket is accepted and
// answers Version, ListPodSandbox and ListContainers (filtered to match
// nothing) within healthTimeout: the listener's accept loop, the gRPC
// server and its interceptor, and the pod and container managers' locks,
// which every CRI call takes, all work. These are in-memory calls, cheap
// every few seconds. A pierd wedged on one of them gets no WATCHDOG=1, and
// systemd kills and restarts it; KillMode=process leaves its containers
// running, and the new pierd reconnects to their shims.
type systemd struct {
	socket   string        // the CRI socket's path
	watchdog time.Duration // WATCHDOG_USEC, or 0
}

// healthTimeout bounds one health check (each of its calls).
const healthTimeout = 5 * time.Second

// healthRetry is the pause before a failed health check is tried again,
// rather than half the watchdog interval later: a pierd that was briefly
// slow still pings in time.
const healthRetry = time.Second

// newSystemd reads what systemd set in the environment. socket is the CRI
// socket's path.
func newSystemd(socket string) *systemd {
	s := &systemd{socket: socket}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		klog.ErrorS(err, "systemd watchdog: ignoring WATCHDOG_USEC")
	}
	s.watchdog = wd
	return s
}

// notify sends states to systemd, if it listens; errors are logged.
func (s *systemd) notify(states ...string) bool {
	msg := strings.Join(states, "\n")
	sent, err := daemon.SdNotify(false, msg)
	if err != nil {
		klog.ErrorS(err, "systemd notification", "state", msg)
	}
	return sent
}

// run waits until the CRI socket serves, tells systemd READY=1, then
// sends WATCHDOG=1 while pierd is healthy, until ctx is done. It returns
// at once without NOTIFY_SOCKET.
func (s *systemd) run(ctx context.Context) {
	if !s.notify("STATUS=starting") {
		return
	}
	for {
		err := s.healthy(ctx)
		if err == nil {
			break
		}
		klog.V(4).InfoS("systemd: CRI socket not serving yet", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	s.notify(daemon.SdNotifyReady, "STATUS=serving CRI on unix://"+s.socket)
	klog.InfoS("Told systemd READY=1", "watchdog", s.watchdog)
	if s.watchdog <= 0 {
		return
	}
	next := s.watchdog / 2
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
		if err := s.healthy(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			klog.InfoS("systemd watchdog: pierd is not healthy, no WATCHDOG=1", "err", err)
			s.notify("STATUS=unhealthy: " + strings.ReplaceAll(err.Error(), "\n", " "))
			next = healthRetry
			continue
		}
		s.notify(daemon.SdNotifyWatchdog, "STATUS=serving CRI on unix://"+s.socket)
		next = s.watchdog / 2
	}
}

// stopping tells systemd that pierd shuts down.
func (s *systemd) stopping() {
	s.notify(daemon.SdNotifyStopping, "STATUS=stopping")
}

// healthy checks, through a new connection, that the CRI socket answers
// (see systemd).
func (s *systemd) healthy(ctx context.Context) error {
	conn, err := grpc.NewClient("unix://"+s.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	const none = "pier-health-check" // no id has dashes: matches nothing
	for _, call := range []struct {
		name string
		f    func(context.Context) error
	}{
		{"Version", func(ctx context.Context) error { _, err := rt.Version(ctx, &runtimeapi.VersionRequest{}); return err }},
		{"ListPodSandbox", func(ctx context.Context) error {
			_, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{Id: none}})
			return err
		}},
		{"ListContainers", func(ctx context.Context) error {
			_, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: none}})
			return err
		}},
	} {
		cctx, cancel := context.WithTimeout(ctx, healthTimeout)
		err := call.f(cctx)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", call.name, err)
		}
	}
	return nil
}
