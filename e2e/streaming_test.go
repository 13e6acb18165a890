package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// crictlCmd is crictl against p, for a test that wires its stdio itself.
func crictlCmd(p *testenv.Pierd, args ...string) *exec.Cmd {
	cmd := exec.Command("crictl", append([]string{"--runtime-endpoint", p.Endpoint(), "--image-endpoint", p.Endpoint(), "--timeout", "60s"}, args...)...)
	cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	return cmd
}

func TestExecStreaming(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "stream")
	id := startContainer(t, p, podID, pod, containerConfig("target", "sleep", "1000"))

	// stdin piped through, output back.
	cmd := crictlCmd(p, "exec", "-i", id, "sh", "-c", "tr a-z A-Z")
	cmd.Stdin = strings.NewReader("hello stream\n")
	out, err := cmd.Output()
	if err != nil || strings.TrimSpace(string(out)) != "HELLO STREAM" {
		t.Fatalf("crictl exec -i: %q %v", out, err)
	}
	// Exit codes reach the client.
	cmd = crictlCmd(p, "exec", id, "sh", "-c", "exit 3")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "exit code 3") {
		t.Fatalf("a failing exec: %v: %s", err, stderr.String())
	}
	// A tty, under a pseudo-terminal made by script(1), with its size.
	cmd = exec.Command("script", "-qec", fmt.Sprintf("stty cols 97 rows 31; crictl --runtime-endpoint %s exec -it %s sh -c 'stty size; exit 0'", p.Endpoint(), id), "/dev/null")
	cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	out, err = cmd.Output()
	if err != nil || !strings.Contains(string(out), "31 97") {
		t.Fatalf("crictl exec -it: %q %v", out, err)
	}
	// A vanished client leaves no process behind.
	cmd = crictlCmd(p, "exec", id, "sleep", "4321")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if out, _ := exec.Command("pgrep", "-f", "sleep 4321").Output(); len(out) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the exec of a vanished client still runs")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAttach(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "attach")
	ticker := startContainer(t, p, podID, pod, containerConfig("ticker", "sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"))
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Go(func() {
			cmd := crictlCmd(p, "attach", ticker)
			stdout, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Error(err)
				return
			}
			buf := make([]byte, 256)
			n, _ := io.ReadAtLeast(stdout, buf, 6)
			cmd.Process.Kill()
			cmd.Wait()
			if !strings.Contains(string(buf[:n]), "tick") {
				t.Errorf("attacher %d read %q", i, buf[:n])
			}
		})
	}
	wg.Wait()
	// stdin to an interactive container.
	cfg := containerConfig("cat", "sh", "-c", "read line; echo got $line; exit 0")
	cfg.Stdin, cfg.StdinOnce = true, true
	cat := startContainer(t, p, podID, pod, cfg)
	cmd := crictlCmd(p, "attach", "-i", cat)
	cmd.Stdin = strings.NewReader("hello-attach\n")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if !strings.Contains(string(out), "got hello-attach") {
		t.Fatalf("crictl attach -i: %q %v %s", out, err, stderr.String())
	}
	st := waitState(t, p, cat, runtimeapi.ContainerState_CONTAINER_EXITED)
	if st.ExitCode != 0 {
		t.Fatalf("the interactive container: %v", st)
	}
}

func TestPortForward(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "pf")
	startContainer(t, p, podID, pod, containerConfig("httpd", "sh", "-c", "mkdir -p /www; echo hello-pf > /www/index.html; httpd -f -p 8080 -h /www"))
	cmd := crictlCmd(p, "port-forward", podID, "18181:8080")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	get := func() (string, error) {
		resp, err := http.Get("http://127.0.0.1:18181/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		body, err := get()
		if err == nil && strings.TrimSpace(body) == "hello-pf" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("port-forward: %q %v", body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Go(func() {
			body, err := get()
			if err == nil && strings.TrimSpace(body) != "hello-pf" {
				err = fmt.Errorf("got %q", body)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent request: %v", err)
		}
	}
}

func TestStreamingURLsAreSingleUse(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "url")
	id := startContainer(t, p, podID, pod, containerConfig("target", "sleep", "1000"))
	resp, err := p.Runtime.Exec(ctx(t), &runtimeapi.ExecRequest{ContainerId: id, Cmd: []string{"true"}, Stdout: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(resp.Url, "http://127.0.0.1:") {
		t.Fatalf("streaming URL %s is not on loopback", resp.Url)
	}
	// The first use consumes the token (a plain GET is no valid upgrade, but
	// it takes the token); the second finds it gone.
	for i, want := range []int{http.StatusBadRequest, http.StatusNotFound} {
		r, err := http.Get(resp.Url)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if i == 1 && r.StatusCode != want {
			t.Fatalf("reused URL: status %d, want %d", r.StatusCode, want)
		}
	}
	stale, err := http.Get(resp.Url[:strings.LastIndex(resp.Url, "/")+1] + "made-up-token")
	if err != nil {
		t.Fatal(err)
	}
	stale.Body.Close()
	if stale.StatusCode != http.StatusNotFound {
		t.Fatalf("made-up token: status %d", stale.StatusCode)
	}
}

// TestAttachTty: a tty container, attached under a pseudo-terminal made by
// script(1), over each of crictl's transports: what is typed reaches it,
// and its output comes back.
func TestAttachTty(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "attachtty")
	for i, transport := range []string{"spdy", "websocket"} {
		cfg := containerConfig("shell-"+transport, "sh")
		cfg.Tty, cfg.Stdin = true, true
		id := startContainer(t, p, podID, pod, cfg)
		cmd := exec.Command("script", "-qec", fmt.Sprintf("crictl --runtime-endpoint %s attach --transport %s -it %s", p.Endpoint(), transport, id), "/dev/null")
		cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
		cmd.Stdin = strings.NewReader(fmt.Sprintf("echo tty-$((40+%d))\nexit 7\n", i))
		out, _ := cmd.Output()
		if !strings.Contains(string(out), fmt.Sprintf("tty-%d", 40+i)) {
			t.Fatalf("crictl attach --transport %s -it: %q", transport, out)
		}
		st := waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_EXITED)
		if st.ExitCode != 7 {
			t.Fatalf("the tty container (%s) exited %d, want 7", transport, st.ExitCode)
		}
	}
}

func TestRunpRuntimeHandlers(t *testing.T) {
	p := startPierd(t, "")
	dir := t.TempDir()
	pod := func(name string) string {
		path := dir + "/" + name + ".json"
		os.WriteFile(path, []byte(`{"metadata":{"name":"`+name+`","namespace":"e2e","uid":"uid-`+name+`"},"linux":{}}`), 0o644)
		return path
	}
	if out, err := p.Crictl("runp", "--runtime", "runc", pod("on-runc")); err != nil || strings.TrimSpace(out) == "" {
		t.Fatalf("crictl runp --runtime runc: %q %v", out, err)
	}
	st, err := p.Runtime.Status(ctx(t), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Crictl("runp", "--runtime", "crun", pod("on-crun"))
	if reason, unusable := strings.CutPrefix(st.Info["handler.crun"], "unusable: "); unusable {
		if err == nil || !strings.Contains(err.Error(), reason) {
			t.Fatalf("crictl runp --runtime crun on a host where crun cannot run: %v", err)
		}
	} else if err != nil {
		t.Fatalf("crictl runp --runtime crun: %v", err)
	}
}
