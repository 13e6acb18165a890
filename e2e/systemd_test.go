package e2e

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// notification is one message pierd sent to NOTIFY_SOCKET; for READY=1,
// whether the CRI socket answered Version right when it arrived.
type notification struct {
	msg        string
	at         time.Time
	versionErr error // Version on the CRI socket at READY=1
}

// TestSystemdNotify starts pierd as systemd would start a Type=notify
// service with WatchdogSec=2s: READY=1 comes only once the CRI socket
// answers, WATCHDOG=1 every second while it runs, STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan notification, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			m := notification{msg: string(buf[:n]), at: time.Now()}
			if strings.Contains(m.msg, "READY=1") {
				// The status line names the socket; it must answer now,
				// without waiting or retrying.
				_, socket, _ := strings.Cut(m.msg, "STATUS=serving CRI on ")
				m.versionErr = versionNow(strings.TrimSpace(socket))
			}
			msgs <- m
		}
	}()

	p, err := testenv.StartPierd(testenv.PierdOptions{
		Binary: pierdBin, Dir: t.TempDir(), Config: network.Config(),
		Env: []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=2000000", "WATCHDOG_PID="},
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false // by the test itself, once its pods are gone
	defer func() {
		if !stopped {
			if err := p.RemovePods(); err != nil {
				t.Errorf("remove the test's pods: %v", err)
			}
			p.Stop()
		}
		if t.Failed() {
			t.Logf("pierd log:\n%s", p.LogText())
		}
	}()

	var got []notification
	wait := func(want string, d time.Duration) notification {
		t.Helper()
		deadline := time.After(d)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("notify socket closed before %q", want)
				}
				got = append(got, m)
				if strings.Contains(m.msg, want) {
					return m
				}
			case <-deadline:
				t.Fatalf("no %q within %s; got %+v", want, d, got)
			}
		}
	}
	ready := wait("READY=1", 20*time.Second)
	if ready.versionErr != nil {
		t.Fatalf("READY=1 came before the CRI socket answered Version: %v (%q)", ready.versionErr, ready.msg)
	}
	if !strings.Contains(ready.msg, "STATUS=serving CRI on "+p.Endpoint()) {
		t.Errorf("READY=1 without the status line: %q", ready.msg)
	}
	first := wait("WATCHDOG=1", 5*time.Second)
	second := wait("WATCHDOG=1", 5*time.Second)
	if d := second.at.Sub(first.at); d < 500*time.Millisecond || d > 3*time.Second {
		t.Errorf("WATCHDOG=1 %s apart, want about 1s (half of WATCHDOG_USEC)", d)
	}

	// Under systemd pierd has NOTIFY_SOCKET; the runtime must not get it
	// (runc's start then waits for a notification socket of the
	// container's that its create never made).
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "notify")
	id := startContainer(t, p, podID, pod, containerConfig("sleeper", "sleep", "1000"))
	waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_RUNNING)
	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if err := p.RemovePods(); err != nil {
		t.Fatal(err)
	}

	stopped = true
	if err := p.Stop(); err != nil {
		t.Fatalf("stop pierd: %v", err)
	}
	wait("STOPPING=1", 5*time.Second)
	if !strings.Contains(p.LogText(), "Told systemd READY=1") {
		t.Error("pierd did not log READY=1")
	}
}

// versionNow calls Version on socket once, with no retry.
func versionNow(socket string) error {
	conn, err := grpc.NewClient(socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = runtimeapi.NewRuntimeServiceClient(conn).Version(ctx, &runtimeapi.VersionRequest{})
	return err
}

// TestSystemdAbsent: without NOTIFY_SOCKET pierd serves as ever and logs
// no notification error.
func TestSystemdAbsent(t *testing.T) {
	p := startPierd(t, "", "NOTIFY_SOCKET=", "WATCHDOG_USEC=1000000")
	if _, err := p.Runtime.Version(ctx(t), &runtimeapi.VersionRequest{}); err != nil {
		t.Fatal(err)
	}
	if log := p.LogText(); strings.Contains(log, "systemd notification") || strings.Contains(log, "Told systemd") {
		t.Errorf("pierd notified systemd without NOTIFY_SOCKET:\n%s", log)
	}
}
