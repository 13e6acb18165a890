package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pier-runtime/pier/internal/atomicfile"
	"github.com/pier-runtime/pier/shim/protocol"
)

// Client talks to one shim over its control socket, one connection per
// call. It is safe for concurrent use.
type Client struct {
	socket string
}

// Start starts a shim for cfg (binary is the path of pier-shim) in a session
// of its own and waits for its handshake: the runtime's create has
// returned and the container's init exists. On failure the error carries
// the runtime's own message (e.g. an executable missing from the image) and
// the shim has exited leaving nothing behind. It returns a client and the
// shim's pid. The shim is the caller's child: Start reaps it when it exits
// while the caller lives.
func Start(ctx context.Context, binary string, cfg protocol.Config) (*Client, int, error) {
	if cfg.Version == 0 {
		cfg.Version = protocol.Version
	}
	if cfg.ID == "" || cfg.Bundle == "" || cfg.Dir == "" || cfg.Socket == "" {
		return nil, 0, errors.New("shim start: id, bundle, dir and socket are required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, 0, fmt.Errorf("shim start: %w", err)
	}
	// Dir is in the volatile state directory: no fsync.
	if err := atomicfile.ReplaceJSON(filepath.Join(cfg.Dir, protocol.ConfigFile), &cfg); err != nil {
		return nil, 0, fmt.Errorf("shim start: %w", err)
	}
	logPath := filepath.Join(cfg.Dir, protocol.LogFile)
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, 0, fmt.Errorf("shim start: %w", err)
	}
	defer log.Close()
	hsr, hsw, err := os.Pipe()
	if err != nil {
		return nil, 0, fmt.Errorf("shim start: %w", err)
	}
	defer hsr.Close()

	cmd := exec.Command(binary, "serve", cfg.Dir)
	cmd.Dir = "/"
	cmd.Env = shimEnv()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = []*os.File{hsw} // fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	hsw.Close()
	if err != nil {
		return nil, 0, fmt.Errorf("shim start: %w", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	// A shim that failed exits right after its handshake.
	waitExit := func() {
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}

	stop := context.AfterFunc(ctx, func() { hsr.SetReadDeadline(time.Now()) })
	b, rerr := io.ReadAll(io.LimitReader(hsr, 1<<20))
	stop()
	// abort kills a shim that may have created the container, and undoes that.
	abort := func() {
		cmd.Process.Kill()
		<-exited
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		cfg.Runtime.Delete(cctx, cfg.ID, true)
	}
	if ctx.Err() != nil {
		abort()
		return nil, 0, fmt.Errorf("shim start: no handshake: %w", ctx.Err())
	}
	var hs protocol.Handshake
	if len(b) == 0 || json.Unmarshal(b, &hs) != nil {
		waitExit()
		msg := "exited before its handshake"
		if rerr != nil {
			msg = rerr.Error()
		}
		if tail := logTail(logPath); tail != "" {
			msg += ": " + tail
		}
		return nil, 0, fmt.Errorf("shim start: pier-shim %s", msg)
	}
	if hs.Error != "" {
		waitExit()
		return nil, 0, &protocol.RemoteError{Msg: hs.Error}
	}
	if hs.V != protocol.Version {
		abort()
		return nil, 0, fmt.Errorf("shim start: handshake version %d: %w", hs.V, ErrVersion)
	}
	return &Client{socket: cfg.Socket}, pid, nil
}

// shimEnv is the shim's environment: the PATH to find the runtime, TMPDIR
// for the runtime's temporary files, one P for the Go scheduler.
func shimEnv() []string {
	env := []string{"GOMAXPROCS=1"}
	for _, k := range []string{"PATH", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// logTail is the last line of the shim's log, to explain a failed start.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	b = bytes.TrimSpace(b)
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return string(b)
}

// Connect connects to the running shim with control socket socket, e.g.
// after a pierd restart, and checks that it answers before ctx is done.
// The error satisfies errors.Is(err, ErrUnavailable) when no shim answers
// there.
func Connect(ctx context.Context, socket string) (*Client, error) {
	c := &Client{socket: socket}
	if _, err := c.call(ctx, &protocol.Request{Op: protocol.OpHello}); err != nil {
		return nil, err
	}
	return c, nil
}

// Started tells the monitor that pierd has run the runtime's start: its
// state becomes running. A monitor of an older pier, which ran the
// runtime's start itself, does not know this request; that is not an
// error.
func (c *Client) Started(ctx context.Context) error {
	_, err := c.call(ctx, &protocol.Request{Op: protocol.OpStarted})
	var re *protocol.RemoteError
	if errors.As(err, &re) && strings.Contains(re.Msg, "unknown operation") {
		return nil
	}
	return err
}

// State returns the shim's view of the container.
func (c *Client) State(ctx context.Context) (*protocol.State, error) {
	r, err := c.call(ctx, &protocol.Request{Op: protocol.OpState})
	if err != nil {
		return nil, err
	}
	if r.State == nil {
		return nil, errors.New("shim state: empty answer")
	}
	return r.State, nil
}

// Wait blocks until the container has exited and returns its exit. When the
// shim dies or the connection breaks first, it returns an error satisfying
// errors.Is(err, ErrUnavailable), never a made-up exit.
func (c *Client) Wait(ctx context.Context) (*protocol.Exit, error) {
	r, err := c.call(ctx, &protocol.Request{Op: protocol.OpWait})
	if err != nil {
		return nil, err
	}
	if r.Exit == nil {
		return nil, errors.New("shim wait: empty answer")
	}
	return r.Exit, nil
}

// Exec runs a process in the running container and waits for it, for
// ExecSync. A process the runtime cannot start (e.g. an executable that
// does not exist) is an error carrying the runtime's message.
//
// It is an exec-stream whose output goes to pipes that Exec reads itself:
// the shim's helper holds none of it, and Exec keeps the first
// ExecOutputBudget bytes of the two streams together (standard error is
// always left its first execStderrShare of it) and drops the rest while
// the process runs on. When r.Timeout passes, or ctx is
// done, the process is killed (SIGKILL); a timeout is reported in the
// result (TimedOut), ctx as an error. Exec reads the output on for at most
// execDrain after the process has exited, for processes it left behind
// that hold the pipes.
func (c *Client) Exec(ctx context.Context, r protocol.ExecRequest) (*protocol.ExecResult, error) {
	if len(r.Args) == 0 {
		return nil, errors.New("shim exec: no command")
	}
	var outs [2]*capture
	var ends [2]*os.File // the process's ends
	budget := &outputBudget{left: ExecOutputBudget, reserved: execStderrShare}
	for i := range outs {
		rd, w, err := os.Pipe()
		if err != nil {
			for _, f := range ends[:i] {
				f.Close()
			}
			for _, o := range outs[:i] {
				o.r.Close()
			}
			return nil, fmt.Errorf("shim exec: %w", err)
		}
		outs[i], ends[i] = &capture{r: rd, done: make(chan struct{}), budget: budget, stderr: i == 1}, w
	}
	timeout := r.Timeout
	r.Timeout = 0 // the helper's own timeout is for older pierds
	p, err := c.ExecStream(ctx, ExecStreamRequest{ExecRequest: r, Stdout: ends[0], Stderr: ends[1]})
	ends[0].Close()
	ends[1].Close()
	if err != nil {
		for _, o := range outs {
			o.r.Close()
		}
		return nil, err
	}
	for _, o := range outs {
		go o.run()
	}
	res := &protocol.ExecResult{}
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	waited := make(chan struct{})
	go func() {
		p.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-expired:
		res.TimedOut = true
		p.kill()
		<-waited
	case <-ctx.Done():
		p.kill()
		<-waited
	}
	code, werr := p.Wait()
	deadline := time.Now().Add(execDrain)
	if werr != nil {
		deadline = time.Now() // the helper is gone: nothing kills the process
	}
	for _, o := range outs {
		o.r.SetReadDeadline(deadline)
	}
	for _, o := range outs {
		<-o.done
		o.r.Close()
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("shim %s exec: %w", c.socket, ctx.Err())
	}
	if werr != nil {
		return nil, werr
	}
	res.ExitCode = code
	res.Stdout, res.Stderr = outs[0].buf, outs[1].buf
	return res, nil
}

// execDrain is how long Exec reads an exec'd process's output after it
// has exited: processes it left behind may hold its pipes.
const execDrain = time.Second

// ExecOutputBudget is how much of an ExecSync's standard output and error
// together Exec keeps: kubelet and crictl accept CRI messages of at most
// 16 MiB, and the reply must fit with room for the rest of it.
const ExecOutputBudget = protocol.MaxExecOutput - 64<<10

// execStderrShare is the part of ExecOutputBudget kept for standard error,
// however much the process prints on its standard output first: a failing
// probe's reason is usually there.
const execStderrShare = 1 << 20

// outputBudget is what is left of ExecOutputBudget for the two captures of
// one exec.
type outputBudget struct {
	mu       sync.Mutex
	left     int
	reserved int // of left, for standard error until it ends
}

// take returns how many of n bytes read from a stream fit.
func (b *outputBudget) take(stderr bool, n int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	avail := b.left
	if !stderr {
		avail -= b.reserved
	}
	k := max(0, min(n, avail))
	b.left -= k
	if stderr {
		b.reserved = max(0, b.reserved-k)
	}
	return k
}

// release gives back what standard error kept in reserve once it ended.
func (b *outputBudget) release() {
	b.mu.Lock()
	b.reserved = 0
	b.mu.Unlock()
}

// capture reads one output of an exec'd process, keeping what fits in its
// budget and dropping the rest.
type capture struct {
	r      *os.File
	buf    []byte
	done   chan struct{}
	budget *outputBudget
	stderr bool
}

func (c *capture) run() {
	defer close(c.done)
	var chunk [32 << 10]byte
	for {
		n, err := c.r.Read(chunk[:])
		if k := c.budget.take(c.stderr, n); k > 0 {
			keep := chunk[:k]
			if len(c.buf)+len(keep) > cap(c.buf) {
				// Doubling, up to the budget: at most twice the output in all.
				grown := make([]byte, len(c.buf), min(max(2*cap(c.buf), len(c.buf)+len(keep)), ExecOutputBudget))
				copy(grown, c.buf)
				c.buf = grown
			}
			c.buf = append(c.buf, keep...)
		}
		if err != nil {
			if c.stderr {
				c.budget.release()
			}
			return
		}
	}
}

// ReopenLog makes the shim reopen the container's log file, e.g. after
// kubelet rotated it.
func (c *Client) ReopenLog(ctx context.Context) error {
	_, err := c.call(ctx, &protocol.Request{Op: protocol.OpReopenLog})
	return err
}

// Delete ends the shim: it kills the container's init if it still runs,
// records its exit and exits. The runtime's state and cgroup stay: delete
// them with the runtime afterwards. A shim that is already gone is not an
// error.
func (c *Client) Delete(ctx context.Context) error {
	_, err := c.call(ctx, &protocol.Request{Op: protocol.OpDelete})
	if errors.Is(err, errNoShim) {
		return nil
	}
	return err
}

// errNoShim: nothing listens on the socket.
var errNoShim = fmt.Errorf("no shim listening: %w", ErrUnavailable)

// call sends one request on a new connection and reads the answer. It
// gives up when ctx is done.
func (c *Client) call(ctx context.Context, req *protocol.Request) (*protocol.Response, error) {
	req.V = protocol.Version
	conn, err := c.dial(ctx, req.Op)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	var resp protocol.Response
	err = json.NewEncoder(conn).Encode(req)
	if err == nil {
		err = json.NewDecoder(conn).Decode(&resp)
	}
	if err != nil {
		return nil, c.connErr(ctx, req.Op, err)
	}
	if err := c.answerErr(req.Op, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

func (c *Client) dial(ctx context.Context, op string) (*net.UnixConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("shim %s %s: %w", c.socket, op, errNoShim)
		}
		return nil, fmt.Errorf("shim %s %s: %v: %w", c.socket, op, err, ErrUnavailable)
	}
	return conn.(*net.UnixConn), nil
}

// connErr is the error of a connection that failed before its answer.
func (c *Client) connErr(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("shim %s %s: %w", c.socket, op, ctx.Err())
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("shim %s %s: connection closed before an answer: %w", c.socket, op, ErrUnavailable)
	}
	return fmt.Errorf("shim %s %s: %w", c.socket, op, err)
}

// answerErr is the error an answer reports, if any.
func (c *Client) answerErr(op string, resp *protocol.Response) error {
	if resp.Error != "" {
		return &protocol.RemoteError{Msg: resp.Error, Code: resp.Code}
	}
	if resp.V != protocol.Version {
		return fmt.Errorf("shim %s %s: answer of version %d: %w", c.socket, op, resp.V, ErrVersion)
	}
	return nil
}
