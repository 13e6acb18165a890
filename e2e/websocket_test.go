package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/client-go/util/exec"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// These tests drive pier's streaming server with client-go's WebSocket
// clients, as kubectl does today: the v5 channel protocol for exec and
// attach, SPDY tunnelled through a WebSocket for port-forward.

// wsStream runs a session at rawURL with client-go's WebSocket executor.
func wsStream(t *testing.T, rawURL string, opts remotecommand.StreamOptions) error {
	t.Helper()
	e, err := remotecommand.NewWebSocketExecutor(&rest.Config{}, "GET", rawURL)
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return e.StreamWithContext(c, opts)
}

// wsExec runs cmd in container id over a WebSocket.
func wsExec(t *testing.T, p *testenv.Pierd, id string, tty bool, stdin io.Reader, sizes remotecommand.TerminalSizeQueue, cmd ...string) (string, error) {
	t.Helper()
	resp, err := p.Runtime.Exec(ctx(t), &runtimeapi.ExecRequest{ContainerId: id, Cmd: cmd, Tty: tty, Stdin: stdin != nil, Stdout: true, Stderr: !tty})
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	opts := remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Tty: tty, TerminalSizeQueue: sizes}
	if !tty {
		opts.Stderr = &errOut
	}
	err = wsStream(t, resp.Url, opts)
	return out.String() + errOut.String(), err
}

// terminal is a client's terminal: 97x31, resized to 120x40 half a second
// later.
type terminal struct{ n int }

func (f *terminal) Next() *remotecommand.TerminalSize {
	f.n++
	switch f.n {
	case 1:
		return &remotecommand.TerminalSize{Width: 97, Height: 31}
	case 2:
		time.Sleep(500 * time.Millisecond)
		return &remotecommand.TerminalSize{Width: 120, Height: 40}
	}
	return nil // no more sizes
}

func TestWebSocketExec(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "wsexec")
	id := startContainer(t, p, podID, pod, containerConfig("target", "sleep", "1000"))

	// stdin through, output back: the end of stdin reaches the process.
	out, err := wsExec(t, p, id, false, strings.NewReader("hello websocket\n"), nil, "sh", "-c", "tr a-z A-Z")
	if err != nil || strings.TrimSpace(out) != "HELLO WEBSOCKET" {
		t.Fatalf("exec with stdin: %q %v", out, err)
	}
	// Exit codes reach the client.
	out, err = wsExec(t, p, id, false, nil, nil, "sh", "-c", "echo to-stderr >&2; exit 3")
	var exit utilexec.ExitError
	if !errors.As(err, &exit) || exit.ExitStatus() != 3 || !strings.Contains(out, "to-stderr") {
		t.Fatalf("a failing exec: %q %v", out, err)
	}
	if out, err = wsExec(t, p, id, false, nil, nil, "true"); err != nil {
		t.Fatalf("exec true: %q %v", out, err)
	}
	// A tty with the client's terminal size, then resized.
	out, err = wsExec(t, p, id, true, strings.NewReader(""), &terminal{}, "sh", "-c", "stty size; sleep 1.5; stty size")
	if err != nil || !strings.Contains(out, "31 97") || !strings.Contains(out, "40 120") {
		t.Fatalf("exec with a tty: %q %v", out, err)
	}
	// A command not in the image.
	if out, err = wsExec(t, p, id, false, nil, nil, "no-such-command"); err == nil {
		t.Fatalf("exec of a missing command succeeded: %q", out)
	}
	// A vanished client leaves no process behind.
	resp, err := p.Runtime.Exec(ctx(t), &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"sleep", "4322"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	e, err := remotecommand.NewWebSocketExecutor(&rest.Config{}, "GET", resp.Url)
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.StreamWithContext(c, remotecommand.StreamOptions{Stdout: io.Discard}) }()
	waitProcess(t, "sleep 4322", true)
	cancel()
	<-done
	waitProcess(t, "sleep 4322", false)
}

// waitProcess waits until a process whose command line matches pattern
// runs (or, with running false, no longer runs).
func waitProcess(t *testing.T, pattern string, running bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, _ := exec.Command("pgrep", "-f", pattern).Output()
		if (len(out) > 0) == running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %q running: %v, want %v", pattern, !running, running)
		}
	}
}

func TestWebSocketAttach(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "wsattach")
	cfg := containerConfig("cat", "sh", "-c", "read line; echo got $line; exit 0")
	cfg.Stdin, cfg.StdinOnce = true, true
	id := startContainer(t, p, podID, pod, cfg)
	resp, err := p.Runtime.Attach(ctx(t), &runtimeapi.AttachRequest{ContainerId: id, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	// The session ends when the container does, once the end of stdin
	// (the v5 CLOSE signal) closed its input.
	var out, errOut bytes.Buffer
	err = wsStream(t, resp.Url, remotecommand.StreamOptions{Stdin: strings.NewReader("hello-ws\n"), Stdout: &out, Stderr: &errOut})
	if err != nil || !strings.Contains(out.String(), "got hello-ws") {
		t.Fatalf("attach: %q %q %v", out.String(), errOut.String(), err)
	}
	if st := waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_EXITED); st.ExitCode != 0 {
		t.Fatalf("the attached container: %v", st)
	}
	// A used URL is refused.
	if err := wsStream(t, resp.Url, remotecommand.StreamOptions{Stdout: &out}); err == nil {
		t.Fatal("a used attach URL worked again")
	}
}

func TestWebSocketPortForward(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "wspf")
	startContainer(t, p, podID, pod, containerConfig("httpd", "sh", "-c", "mkdir -p /www; echo hello-wspf > /www/index.html; httpd -f -p 8080 -h /www"))
	// One that listens on the pod's IPv6 loopback only.
	id6 := startContainer(t, p, podID, pod, containerConfig("httpd6", "sh", "-c", "mkdir -p /www6; echo hello-ipv6 > /www6/index.html; httpd -f -p '[::1]:8081' -h /www6"))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id6, Cmd: []string{"netstat", "-ltn"}})
		if err == nil && strings.Contains(string(r.Stdout), "::1:8081") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("httpd does not listen on [::1]:8081: %v %s", err, r.GetStdout())
		}
	}
	resp, err := p.Runtime.PortForward(ctx(t), &runtimeapi.PortForwardRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(resp.Url)
	if err != nil {
		t.Fatal(err)
	}
	dialer, err := portforward.NewSPDYOverWebsocketDialer(u, &rest.Config{})
	if err != nil {
		t.Fatal(err)
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	var logs bytes.Buffer
	pf, err := portforward.New(dialer, []string{"0:8080", "0:8081"}, stop, ready, &logs, &logs)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- pf.ForwardPorts() }()
	defer func() {
		close(stop)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("port-forward ended with %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("port-forward did not end when told to stop")
		}
	}()
	select {
	case <-ready:
	case err := <-done:
		done <- err // for the deferred check
		t.Fatalf("port-forward: %v: %s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("port-forward never got ready")
	}
	ports, err := pf.GetPorts()
	if err != nil || len(ports) != 2 {
		t.Fatalf("ports %v %v", ports, err)
	}
	get := func(port uint16, want string) error {
		r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return err
		}
		defer r.Body.Close()
		b, err := io.ReadAll(r.Body)
		if err == nil && strings.TrimSpace(string(b)) != want {
			err = fmt.Errorf("got %q", b)
		}
		return err
	}
	for i, want := range []string{"hello-wspf", "hello-ipv6"} {
		deadline := time.Now().Add(15 * time.Second)
		for err := get(ports[i].Local, want); err != nil; err = get(ports[i].Local, want) {
			if time.Now().After(deadline) {
				t.Fatalf("port-forward to %d: %v: %s", ports[i].Remote, err, logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Go(func() {
			if err := get(ports[0].Local, "hello-wspf"); err != nil {
				t.Errorf("concurrent request %d: %v", i, err)
			}
		})
	}
	wg.Wait()
}
