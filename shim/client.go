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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pier-runtime/pier/internal/atomicfile"
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
func Start(ctx context.Context, binary string, cfg Config) (*Client, int, error) {
	if cfg.Version == 0 {
		cfg.Version = ProtocolVersion
	}
	if cfg.ID == "" || cfg.Bundle == "" || cfg.Dir == "" || cfg.Socket == "" {
		return nil, 0, errors.New("shim start: id, bundle, dir and socket are required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, 0, fmt.Errorf("shim start: %w", err)
	}
	if err := atomicfile.WriteJSON(filepath.Join(cfg.Dir, configFile), &cfg); err != nil {
		return nil, 0, fmt.Errorf("shim start: %w", err)
	}
	logPath := filepath.Join(cfg.Dir, logFile)
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
	var hs handshake
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
		return nil, 0, &remoteError{msg: hs.Error}
	}
	if hs.V != ProtocolVersion {
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
// after a pierd restart. The error satisfies errors.Is(err, ErrUnavailable)
// when no shim answers there.
func Connect(socket string) (*Client, error) {
	c := &Client{socket: socket}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.call(ctx, &request{Op: opHello}); err != nil {
		return nil, err
	}
	return c, nil
}

// Start runs the container's process (the runtime's start).
func (c *Client) Start(ctx context.Context) error {
	_, err := c.call(ctx, &request{Op: opStart})
	return err
}

// Kill sends sig to the container's init, or with all to all of its
// processes. It fails with ErrNotRunning once the container has exited.
func (c *Client) Kill(ctx context.Context, sig syscall.Signal, all bool) error {
	_, err := c.call(ctx, &request{Op: opKill, Signal: int(sig), All: all})
	return err
}

// State returns the shim's view of the container.
func (c *Client) State(ctx context.Context) (*State, error) {
	r, err := c.call(ctx, &request{Op: opState})
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
func (c *Client) Wait(ctx context.Context) (*Exit, error) {
	r, err := c.call(ctx, &request{Op: opWait})
	if err != nil {
		return nil, err
	}
	if r.Exit == nil {
		return nil, errors.New("shim wait: empty answer")
	}
	return r.Exit, nil
}

// Exec runs a process in the running container and waits for it. A process
// the runtime cannot start (e.g. an executable that does not exist) is an
// error carrying the runtime's message.
func (c *Client) Exec(ctx context.Context, r ExecRequest) (*ExecResult, error) {
	if len(r.Args) == 0 {
		return nil, errors.New("shim exec: no command")
	}
	resp, err := c.call(ctx, &request{Op: opExec, Exec: &r})
	if err != nil {
		return nil, err
	}
	if resp.Exec == nil {
		return nil, errors.New("shim exec: empty answer")
	}
	return resp.Exec, nil
}

// ReopenLog makes the shim reopen the container's log file, e.g. after
// kubelet rotated it.
func (c *Client) ReopenLog(ctx context.Context) error {
	_, err := c.call(ctx, &request{Op: opReopen})
	return err
}

// Delete kills the container if it still runs, deletes it from the runtime
// (state and cgroup) and makes the shim exit. A shim that is already gone
// is not an error.
func (c *Client) Delete(ctx context.Context) error {
	_, err := c.call(ctx, &request{Op: opDelete})
	if errors.Is(err, errNoShim) {
		return nil
	}
	return err
}

// errNoShim: nothing listens on the socket.
var errNoShim = fmt.Errorf("no shim listening: %w", ErrUnavailable)

// call sends one request on a new connection and reads the answer. It
// gives up when ctx is done.
func (c *Client) call(ctx context.Context, req *request) (*response, error) {
	req.V = ProtocolVersion
	conn, err := c.dial(ctx, req.Op)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	var resp response
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
func (c *Client) answerErr(op string, resp *response) error {
	if resp.Error != "" {
		return &remoteError{msg: resp.Error, code: resp.Code}
	}
	if resp.V != ProtocolVersion {
		return fmt.Errorf("shim %s %s: answer of version %d: %w", c.socket, op, resp.V, ErrVersion)
	}
	return nil
}

// StartPodInit starts a pod init, the pier-shim-monitor beside pier-shim
// (binary), as PID 1 of a new PID namespace,
// in a session of its own, for a pod whose containers share one PID
// namespace: it reaps the orphans of that namespace and sleeps until it is
// killed (SIGKILL; it ignores the usual termination signals, so that no
// container process can end the pod's namespace). It returns its pid as
// seen from the caller; containers join /proc/<pid>/ns/pid. It is the
// caller's child, reaped when it exits while the caller lives.
//
// The pod's id is on its command line, so that FindPodInits finds it when
// its pid was never recorded (pierd killed while it started it).
//
// With opts.UIDMappings, the pod init is made in a new user namespace with
// those mappings (see PodInitOptions).
func StartPodInit(binary, podID string, opts PodInitOptions) (int, error) {
	cmd := exec.Command(filepath.Join(filepath.Dir(binary), "pier-shim-monitor"), "pod-init", podID)
	cmd.Args[0] = "pier-shim" // as FindPodInits and IsShim know it
	cmd.Dir = "/"
	cmd.Env = []string{}
	// Namespaces of its own besides the PID namespace it is PID 1 of:
	// the containers of the pod see it, and must reach nothing of the host
	// through it (the monitor confines itself further). In a user
	// namespace, its network, IPC and UTS namespaces become the pod's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS}
	if len(opts.UIDMappings) > 0 {
		// It runs as root of the new namespace, which may not be able to
		// reach the binary through its directories: it runs the binary
		// through a descriptor opened here.
		bin, err := os.Open(cmd.Path)
		if err != nil {
			return 0, fmt.Errorf("start pod init: %w", err)
		}
		defer bin.Close()
		cmd.Path, cmd.ExtraFiles = "/proc/self/fd/3", []*os.File{bin}
		a := cmd.SysProcAttr
		a.Cloneflags |= syscall.CLONE_NEWUSER
		a.UidMappings, a.GidMappings = opts.UIDMappings, opts.GIDMappings
		// Containers joining the namespace set their groups.
		a.GidMappingsEnableSetgroups = true
		a.Credential = &syscall.Credential{Uid: 0, Gid: 0}
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start pod init: %w", err)
	}
	go cmd.Wait()
	return cmd.Process.Pid, nil
}

// PodInitOptions are the namespaces a pod init is made in besides its PID
// namespace.
type PodInitOptions struct {
	// UIDMappings and GIDMappings, when set, make the pod init in a new user
	// namespace with these mappings, as its root (the host uid container
	// uid 0 maps to). That namespace owns the init's PID namespace and new
	// network, IPC and UTS namespaces it is made in, which the pod's
	// containers join with it: an init that only makes them, for a pod
	// without a shared PID namespace, is ended once they are pinned.
	UIDMappings, GIDMappings []syscall.SysProcIDMap
}

// FindPodInits returns the pids of the pod inits started for pod podID.
func FindPodInits(podID string) []int {
	want := []byte("\x00pod-init\x00" + podID + "\x00")
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil || !bytes.Contains(b, []byte("pier-shim")) || !bytes.Contains(b, want) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(d))); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// IsShim reports whether pid is still the pier-shim (a container's or a
// pod init) that started at start (StartTime; 0: any pier-shim), so that a
// recorded pid is never signalled once it was reused, even by another shim.
func IsShim(pid int, start uint64) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(b, []byte("pier-shim")) {
		return false
	}
	return start == 0 || StartTime(pid) == start
}

// StartTime is when process pid started, in clock ticks since boot (field
// 22 of /proc/<pid>/stat), or 0 when it does not exist. With the pid it
// names one process for good.
func StartTime(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:])) // from field 3, the state
	if len(f) < 20 {
		return 0
	}
	start, _ := strconv.ParseUint(f[19], 10, 64)
	return start
}
