package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Pierd is a pierd process with its own temporary root, state and socket.
type Pierd struct {
	Dir    string // holds config.toml, root/, state/, pier.sock, pierd.log
	Socket string
	Log    string

	Runtime runtimeapi.RuntimeServiceClient
	Images  runtimeapi.ImageServiceClient

	opts PierdOptions
	cmd  *exec.Cmd
	conn *grpc.ClientConn
	exit chan error
}

// PierdOptions say how to start pierd.
type PierdOptions struct {
	Binary string   // path of the pierd binary
	Dir    string   // state directory; reuse it to restart on the same state
	Config string   // extra TOML for config.toml
	Env    []string // extra environment
	// NodeLogging runs pierd at its default verbosity, as a node does,
	// instead of -v 4 (each CRI request logged), for benchmarks.
	NodeLogging bool
}

// StartPierd starts pierd and waits until it answers Version.
func StartPierd(opts PierdOptions) (*Pierd, error) {
	p := &Pierd{
		Dir:    opts.Dir,
		Socket: filepath.Join(opts.Dir, "pier.sock"),
		Log:    filepath.Join(opts.Dir, "pierd.log"),
		opts:   opts,
	}
	if err := os.WriteFile(filepath.Join(p.Dir, "config.toml"), []byte(opts.Config), 0o644); err != nil {
		return nil, err
	}
	return p, p.Start()
}

// Root is pierd's persistent state directory.
func (p *Pierd) Root() string { return filepath.Join(p.Dir, "root") }

// Pid is the pierd process's pid, 0 when it is not running.
func (p *Pierd) Pid() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Endpoint is the CRI endpoint, unix:///...
func (p *Pierd) Endpoint() string { return "unix://" + p.Socket }

// Start (re)starts the pierd process on the same state.
func (p *Pierd) Start() error {
	log, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	args := []string{"--config", filepath.Join(p.Dir, "config.toml"),
		"--root", p.Root(), "--state", filepath.Join(p.Dir, "state"), "--listen", p.Endpoint()}
	if !p.opts.NodeLogging {
		args = append(args, "-v", "4")
	}
	p.cmd = exec.Command(p.opts.Binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = log, log
	p.cmd.Env = append(os.Environ(), p.opts.Env...)
	if err := p.cmd.Start(); err != nil {
		return err
	}
	p.exit = make(chan error, 1)
	go func(c *exec.Cmd, exit chan error) { exit <- c.Wait() }(p.cmd, p.exit)

	// Retry the dial quickly while pierd starts (gRPC waits a second by default).
	fast := grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, MaxDelay: 200 * time.Millisecond}, MinConnectTimeout: time.Second}
	conn, err := grpc.NewClient(p.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithConnectParams(fast))
	if err != nil {
		p.Kill()
		return err
	}
	p.conn, p.Runtime, p.Images = conn, runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := p.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case werr := <-p.exit:
			p.exit <- werr
			return fmt.Errorf("pierd exited (%v): %s", werr, p.LogText())
		default:
		}
		if time.Now().After(deadline) {
			p.Kill()
			return fmt.Errorf("pierd did not answer: %v: %s", err, p.LogText())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// RemovePods stops and removes every pod sandbox, as a test's cleanup:
// pods outlive pierd, so stopping pierd alone would leave them on the node.
func (p *Pierd) RemovePods() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pods, err := p.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return err
	}
	var errs []error
	for _, pod := range pods.Items {
		if _, err := p.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: pod.Id}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Stop ends pierd with SIGTERM and waits for it.
func (p *Pierd) Stop() error { return p.signal(syscall.SIGTERM) }

// Kill ends pierd with SIGKILL, as a crash would, and waits for it.
func (p *Pierd) Kill() error { return p.signal(syscall.SIGKILL) }

func (p *Pierd) signal(sig syscall.Signal) error {
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
	if p.cmd == nil {
		return nil
	}
	p.cmd.Process.Signal(sig)
	var err error
	select {
	case err = <-p.exit:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		err = <-p.exit
	}
	p.cmd = nil
	var ee *exec.ExitError
	if sig == syscall.SIGKILL && errors.As(err, &ee) {
		return nil
	}
	return err
}

// LogText is what pierd has logged so far.
func (p *Pierd) LogText() string {
	b, _ := os.ReadFile(p.Log)
	return string(b)
}

// Crictl runs crictl against this pierd and returns its standard output.
func (p *Pierd) Crictl(args ...string) (string, error) {
	full := append([]string{"--runtime-endpoint", p.Endpoint(), "--image-endpoint", p.Endpoint(), "--timeout", "60s"}, args...)
	cmd := exec.Command("crictl", full...)
	cmd.Env = append(os.Environ(), "CRI_CONFIG_FILE=/dev/null")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("crictl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// BuildPier builds pierd, pier-shim and pier-shim-monitor from the
// repository at root into dir, as make does (pier-shim static; the
// monitor by make itself, bin/pier-shim-monitor, copied), and returns
// pierd's path. With race, pierd and pier-shim have the race detector
// (pier-shim then with cgo).
func BuildPier(root, dir string, race bool) (string, error) {
	pierd := filepath.Join(dir, "pierd")
	var flags []string
	cgo := "CGO_ENABLED=0"
	if race {
		flags, cgo = []string{"-race"}, "CGO_ENABLED=1"
	}
	for _, b := range []struct {
		args []string
		env  string
	}{
		{append(append([]string{"go", "build", "-tags", "nri_no_wasm", "-o", pierd}, flags...), filepath.Join(root, "cmd/pierd")), ""},
		{append(append([]string{"go", "build", "-o", filepath.Join(dir, "pier-shim")}, flags...), filepath.Join(root, "cmd/pier-shim")), cgo},
		{[]string{"make", "-s", "-C", root, "bin/pier-shim-monitor"}, ""},
		{[]string{"cp", filepath.Join(root, "bin/pier-shim-monitor"), filepath.Join(dir, "pier-shim-monitor")}, ""},
	} {
		cmd := exec.Command(b.args[0], b.args[1:]...)
		if b.env != "" {
			cmd.Env = append(os.Environ(), b.env)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %v: %s", strings.Join(b.args, " "), err, out)
		}
	}
	return pierd, nil
}
