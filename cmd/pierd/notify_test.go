package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCRI answers the health check's calls; with stuck set,
// ListContainers hangs as a CRI call on a wedged lock would.
type fakeCRI struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	stuck atomic.Bool
}

func (f *fakeCRI) Version(context.Context, *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "fake"}, nil
}

func (f *fakeCRI) ListPodSandbox(context.Context, *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	return &runtimeapi.ListPodSandboxResponse{}, nil
}

func (f *fakeCRI) ListContainers(ctx context.Context, _ *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	for f.stuck.Load() {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return &runtimeapi.ListContainersResponse{}, nil
}

// notifySocket listens where NOTIFY_SOCKET points and returns the
// messages it receives.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	out := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(out)
				return
			}
			out <- string(buf[:n])
		}
	}()
	return out
}

// next returns the next message that contains want, failing after wait.
func next(t *testing.T, msgs <-chan string, want string, wait time.Duration) string {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-msgs:
			if strings.Contains(m, want) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q within %s", want, wait)
		}
	}
}

// none fails if a message containing unwanted comes within wait.
func none(t *testing.T, msgs <-chan string, unwanted string, wait time.Duration) {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m := <-msgs:
			if strings.Contains(m, unwanted) {
				t.Fatalf("unexpected %q", m)
			}
		case <-deadline:
			return
		}
	}
}

func TestSystemdNotify(t *testing.T) {
	msgs := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "400000") // 0.4 s: pings every 0.2 s
	t.Setenv("WATCHDOG_PID", "")
	socket := filepath.Join(t.TempDir(), "cri.sock")
	sd := newSystemd(socket)
	if sd.watchdog != 400*time.Millisecond {
		t.Fatalf("watchdog %s, want 400ms", sd.watchdog)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { sd.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	// Not serving yet: no READY=1.
	next(t, msgs, "STATUS=starting", 5*time.Second)
	none(t, msgs, "READY=1", 500*time.Millisecond)

	lis, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeCRI{}
	server := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(server, fake)
	go server.Serve(lis)
	defer server.Stop()
	m := next(t, msgs, "READY=1", 5*time.Second)
	if !strings.Contains(m, "STATUS=serving CRI on unix://"+socket) {
		t.Errorf("READY=1 without the status line: %q", m)
	}
	next(t, msgs, "WATCHDOG=1", 2*time.Second)
	next(t, msgs, "WATCHDOG=1", 2*time.Second)

	// Unhealthy: no WATCHDOG=1 while ListContainers hangs.
	fake.stuck.Store(true)
	time.Sleep(time.Second) // a ping may have been under way
	drain(msgs)
	none(t, msgs, "WATCHDOG=1", healthTimeout+time.Second)
	fake.stuck.Store(false)
	next(t, msgs, "WATCHDOG=1", 3*time.Second)

	sd.stopping()
	next(t, msgs, "STOPPING=1", 2*time.Second)
	cancel()
	select {
	case <-done:
	case <-time.After(healthTimeout + time.Second):
		t.Fatal("run did not return once its context was done")
	}
}

func drain(msgs <-chan string) {
	for {
		select {
		case <-msgs:
		default:
			return
		}
	}
}

// TestSystemdAbsent: without NOTIFY_SOCKET nothing is sent and run
// returns at once.
func TestSystemdAbsent(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000000")
	sd := newSystemd(filepath.Join(t.TempDir(), "cri.sock"))
	done := make(chan struct{})
	go func() { sd.run(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run waits without NOTIFY_SOCKET")
	}
	sd.stopping() // no panic, no error
}
