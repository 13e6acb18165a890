package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/oci"
	"github.com/pier-runtime/pier/shim/protocol"
)

// execDrain is how long the shim reads an exec'd process's output after it
// has exited: processes it left behind may hold its pipes.
const execDrain = time.Second

var execSeq atomic.Uint64

// exec runs req in the container (the runtime's exec --detach), waits for
// it as its subreaper, and returns its exit code and output. On timeout,
// or when ctx is done (the client went away), the process is killed.
func (s *server) exec(ctx context.Context, req *protocol.ExecRequest) (*protocol.ExecResult, error) {
	if err := s.checkRunning(); err != nil {
		return nil, err
	}
	p, err := s.execProcess(req)
	if err != nil {
		return nil, err
	}
	var pipes [4]*os.File // stdout r, w; stderr r, w
	for i := 0; i < 4; i += 2 {
		if pipes[i], pipes[i+1], err = os.Pipe(); err != nil {
			for _, f := range pipes {
				if f != nil {
					f.Close()
				}
			}
			return nil, fmt.Errorf("pier-shim: exec: %w", err)
		}
	}
	outs := [2]*capture{newCapture(pipes[0]), newCapture(pipes[2])}
	for _, c := range outs {
		go c.run()
	}
	pid, exited, err := s.runExec(ctx, p, oci.ExecOpts{IO: oci.IO{Stdout: pipes[1], Stderr: pipes[3]}})
	pipes[1].Close()
	pipes[3].Close()
	if err != nil {
		stopCaptures(outs, 0)
		return nil, err
	}

	res := &protocol.ExecResult{}
	var timeout <-chan time.Time
	if req.Timeout > 0 {
		t := time.NewTimer(req.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var ws unix.WaitStatus
	select {
	case ws = <-exited:
	case <-timeout:
		res.TimedOut = true
		s.reap.kill(pid, unix.SIGKILL)
		ws = <-exited
	case <-ctx.Done():
		s.reap.kill(pid, unix.SIGKILL)
		ws = <-exited
	}
	res.ExitCode = exitCode(ws)
	stopCaptures(outs, execDrain)
	res.Stdout, res.Stderr = outs[0].buf.Bytes(), outs[1].buf.Bytes()
	return res, nil
}

// checkRunning fails with ErrNotRunning once the container has exited. A
// created container is pierd's to refuse (a monitor of an older pier may
// not know that pierd has started it).
func (s *server) checkRunning() error {
	if s.status == protocol.StatusExited {
		return errExited
	}
	return nil
}

// runExec starts p in the container (the runtime's exec --detach) and
// returns its pid and the channel that gets its wait status.
func (s *server) runExec(ctx context.Context, p *specs.Process, opts oci.ExecOpts) (int, <-chan unix.WaitStatus, error) {
	opts.PidFile = filepath.Join(s.cfg.Dir, "exec-"+strconv.Itoa(os.Getpid())+"-"+strconv.FormatUint(execSeq.Add(1), 10)+".pid")
	defer os.Remove(opts.PidFile)
	var pid int
	var exited <-chan unix.WaitStatus
	err := s.reap.run(func() error {
		err := s.rt.Exec(ctx, s.cfg.ID, p, opts)
		if err != nil {
			return err
		}
		if pid, err = readPidFile(opts.PidFile); err != nil {
			return fmt.Errorf("pier-shim: exec: %w", err)
		}
		exited = s.reap.register(pid)
		return nil
	})
	return pid, exited, err
}

// exitCode is a process's exit status, or 128+signal.
func exitCode(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// execProcess is the container's process (config.json of the bundle) with
// the request's command, user, and environment and working directory when
// given.
func (s *server) execProcess(req *protocol.ExecRequest) (*specs.Process, error) {
	b, err := os.ReadFile(filepath.Join(s.cfg.Bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("pier-shim: exec: %w", err)
	}
	var spec struct {
		Process *specs.Process `json:"process"`
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("pier-shim: exec: bundle config: %w", err)
	}
	if spec.Process == nil {
		return nil, errors.New("pier-shim: exec: the bundle's config has no process")
	}
	p := *spec.Process
	p.Args = req.Args
	p.Terminal, p.ConsoleSize = false, nil
	if req.Env != nil {
		p.Env = req.Env
	}
	if req.Cwd != "" {
		p.Cwd = req.Cwd
	}
	p.User = specs.User{UID: req.UID, GID: req.GID, AdditionalGids: req.AdditionalGids, Umask: p.User.Umask}
	return &p, nil
}

// capture reads one output of an exec'd process, keeping the first
// protocol.MaxExecOutput bytes.
type capture struct {
	r    *os.File
	buf  bytes.Buffer
	done chan struct{}
}

func newCapture(r *os.File) *capture {
	return &capture{r: r, done: make(chan struct{})}
}

func (c *capture) run() {
	defer close(c.done)
	if _, err := c.buf.ReadFrom(io.LimitReader(c.r, protocol.MaxExecOutput)); err == nil {
		io.Copy(io.Discard, c.r) // beyond the limit
	}
}

// stopCaptures lets the captures read on for at most d, then closes their
// pipes.
func stopCaptures(cs [2]*capture, d time.Duration) {
	deadline := time.Now().Add(d)
	for _, c := range cs {
		c.r.SetReadDeadline(deadline)
	}
	for _, c := range cs {
		<-c.done
		c.r.Close()
	}
}
