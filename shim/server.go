package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/internal/atomicfile"
	"github.com/pier-runtime/pier/oci"
)

// handshakeFd is the pipe Start hands the shim for its one handshake
// message.
const handshakeFd = 3

// opTimeout bounds a runtime command the shim runs for a client (create
// has none: pierd bounds the handshake).
const opTimeout = time.Minute

// Main is pier-shim's main:
//
//	pier-shim serve <dir>   the shim of the container described by <dir>/shim.json (see Start)
//	pier-shim pod-init <pod id>   PID 1 of a pod's PID namespace (see StartPodInit)
func Main(args []string) {
	// One runs per container: one P, a small heap, no memory profiling.
	runtime.MemProfileRate = 0
	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(10)
	switch {
	case len(args) == 3 && args[1] == "serve":
		os.Exit(serve(args[2]))
	case len(args) == 3 && args[1] == "pod-init":
		podInit()
	}
	fmt.Fprintln(os.Stderr, "usage: pier-shim serve <dir> | pier-shim pod-init <pod id>\n\npier-shim is started by pierd, one per container.")
	os.Exit(2)
}

// logf writes a line to the shim's log (its standard error, <dir>/shim.log).
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format(time.RFC3339Nano)+" pier-shim["+strconv.Itoa(os.Getpid())+"] "+format+"\n", args...)
}

// server is the shim of one container.
type server struct {
	cfg     Config
	rt      *oci.Runtime
	reap    *reaper
	log     *criLog
	ln      *net.UnixListener
	oomFile string  // the container's OOM kill counter
	oomBase int64   // its value after create
	streams streams // stdio kept for attachers

	logsDone [2]chan struct{} // closed when stdout, stderr reach their end
	exited   chan struct{}    // closed once exit is set and exit.json written
	done     chan struct{}    // closed once the container is deleted
	doneOnce sync.Once
	handlers sync.WaitGroup // connections being answered

	opMu sync.Mutex // start and delete, one at a time

	mu        sync.Mutex
	status    string
	pid       int
	createdAt time.Time
	startedAt time.Time
	exit      *Exit

	deleted bool // under opMu
}

// serve runs the shim of the container described by dir/shim.json and
// returns its exit code.
func serve(dir string) int {
	if _, err := unix.FcntlInt(handshakeFd, unix.F_GETFD, 0); err != nil {
		fmt.Fprintln(os.Stderr, "pier-shim: no handshake pipe on fd 3: pier-shim is started by pierd")
		return 2
	}
	// Neither the runtime nor the container may hold the handshake pipe.
	unix.CloseOnExec(handshakeFd)
	hs := os.NewFile(handshakeFd, "handshake")

	s, err := newServer(dir)
	if err == nil {
		err = s.create()
	}
	msg := handshake{V: ProtocolVersion}
	if err != nil {
		msg.Error = err.Error()
	} else {
		msg.Pid = s.pid
	}
	b, _ := json.Marshal(msg)
	_, werr := hs.Write(append(b, '\n'))
	hs.Close()
	if err != nil {
		logf("create failed: %v", err)
		return 1
	}
	if werr != nil {
		// pierd gave up on this container: leave nothing behind.
		logf("handshake: %v; deleting the container", werr)
		s.delete()
		s.ln.Close()
		return 1
	}
	logf("container %s created, init pid %d", s.cfg.ID, s.pid)
	go s.accept()
	// Give back what create used; from now on the shim allocates little.
	debug.FreeOSMemory()
	<-s.done
	s.ln.Close() // removes the socket
	s.log.close()
	// Let the answers in flight go out.
	idle := make(chan struct{})
	go func() {
		s.handlers.Wait()
		close(idle)
	}()
	select {
	case <-idle:
	case <-time.After(2 * time.Second):
	}
	logf("container %s deleted, exiting", s.cfg.ID)
	return 0
}

func newServer(dir string) (*server, error) {
	b, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		return nil, fmt.Errorf("pier-shim: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("pier-shim: %s: %w", filepath.Join(dir, configFile), err)
	}
	if cfg.Version != ProtocolVersion {
		return nil, fmt.Errorf("pier-shim: %s has version %d, this shim speaks version %d", filepath.Join(dir, configFile), cfg.Version, ProtocolVersion)
	}
	cfg.Dir = dir
	return &server{
		cfg:      cfg,
		rt:       &cfg.Runtime,
		streams:  streams{tty: cfg.Tty, stdinOnce: cfg.StdinOnce, stdin: -1, ptyStdin: cfg.Tty && cfg.Stdin},
		logsDone: [2]chan struct{}{make(chan struct{}), make(chan struct{})},
		exited:   make(chan struct{}),
		done:     make(chan struct{}),
	}, nil
}

// create opens the log and the control socket, becomes the subreaper and
// runs the runtime's create with the container's output on two pipes. On
// failure it leaves nothing: no runtime state, no socket.
func (s *server) create() (err error) {
	ctx := context.Background()
	os.Remove(filepath.Join(s.cfg.Dir, exitFile))
	// Only the cgroup: decoding a whole spec costs the shim a few hundred
	// KiB of type caches for good.
	var spec struct {
		Linux *struct {
			CgroupsPath string `json:"cgroupsPath"`
		} `json:"linux"`
	}
	b, err := os.ReadFile(filepath.Join(s.cfg.Bundle, "config.json"))
	if err == nil {
		err = json.Unmarshal(b, &spec)
	}
	if err != nil {
		return fmt.Errorf("pier-shim: bundle: %w", err)
	}
	if s.log, err = openCRILog(s.cfg.LogPath); err != nil {
		return fmt.Errorf("pier-shim: open the container's log: %w", err)
	}
	defer func() {
		if err != nil {
			s.log.close()
		}
	}()
	if s.ln, err = listen(s.cfg.Socket); err != nil {
		return fmt.Errorf("pier-shim: %w", err)
	}
	defer func() {
		if err != nil {
			s.ln.Close()
		}
	}()
	if s.reap, err = newReaper(); err != nil {
		return fmt.Errorf("pier-shim: %w", err)
	}

	// The container's stdio: pipes to the log, or a terminal; a pipe for
	// stdin, or /dev/null.
	var pipes [4]*os.File // stdout r, w; stderr r, w (no tty)
	var stdinR *os.File
	var console *consoleSocket
	closeAll := func() {
		for _, f := range append(pipes[:], stdinR) {
			if f != nil {
				f.Close()
			}
		}
		closeFds([]int{s.streams.stdin})
		s.streams.stdin = -1
	}
	if s.cfg.Tty {
		console, err = newConsoleSocket(s.cfg.Dir)
	} else {
		for i := 0; i < 4 && err == nil; i += 2 {
			pipes[i], pipes[i+1], err = os.Pipe()
		}
		if s.cfg.Stdin && err == nil {
			var p [2]int
			if err = unix.Pipe2(p[:], unix.O_CLOEXEC); err == nil {
				stdinR, s.streams.stdin = os.NewFile(uintptr(p[0]), "stdin"), p[1]
			}
		}
	}
	if err != nil {
		closeAll()
		return fmt.Errorf("pier-shim: %w", err)
	}
	opts := oci.CreateOpts{
		PidFile: filepath.Join(s.cfg.Dir, "init.pid"),
		IO:      oci.IO{Stdin: stdinR, Stdout: pipes[1], Stderr: pipes[3]},
	}
	if console != nil {
		opts.ConsoleSocket = console.path()
	}
	master := -1
	var initExit <-chan unix.WaitStatus
	err = s.reap.run(func() error {
		err := s.rt.Create(ctx, s.cfg.ID, s.cfg.Bundle, opts)
		if err != nil {
			return err
		}
		pid, err := readPidFile(opts.PidFile)
		if err != nil {
			return fmt.Errorf("pier-shim: %w", err)
		}
		s.pid = pid
		initExit = s.reap.register(pid)
		if console != nil {
			master, err = console.receive()
		}
		return err
	})
	os.Remove(opts.PidFile)
	if console != nil {
		console.close()
	}
	for _, f := range []*os.File{pipes[1], pipes[3], stdinR} {
		if f != nil {
			f.Close()
		}
	}
	if err != nil {
		closeAll()
		// The runtime undoes a failed create itself; make sure.
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if derr := s.reap.run(func() error { return s.rt.Delete(cctx, s.cfg.ID, true) }); derr != nil && !errors.Is(derr, oci.ErrNotFound) {
			logf("delete after the failed create: %v", derr)
		}
		return err
	}
	var cgroupsPath string
	if spec.Linux != nil {
		cgroupsPath = spec.Linux.CgroupsPath
	}
	s.oomFile = oomCounterFile(s.pid, cgroupsPath)
	s.oomBase = readOOMKills(s.oomFile)
	if s.oomFile == "" {
		logf("no memory cgroup found for pid %d: OOM kills go unnoticed", s.pid)
	}
	s.status, s.createdAt = StatusCreated, time.Now()
	if s.cfg.Tty {
		// Non-blocking, for the poller; attachers' duplicates share that.
		unix.SetNonblock(master, true)
		s.streams.pty = os.NewFile(uintptr(master), "pty")
		go s.copyOutput(s.streams.pty, 0, output{stream: "stdout", crlf: true})
		close(s.logsDone[1])
	} else {
		go s.copyOutput(pipes[0], 0, output{stream: "stdout"})
		go s.copyOutput(pipes[2], 1, output{stream: "stderr"})
	}
	go s.waitInit(initExit)
	return nil
}

// copyOutput copies output stream i of the container from r to the log and
// the attachers until its end.
func (s *server) copyOutput(r *os.File, i int, o output) {
	o.tee = s.streams.tee(i)
	o.copy(r, s.log)
	r.Close()
	s.streams.end(i)
	close(s.logsDone[i])
}

// listen listens on the control socket, replacing a stale socket file but
// not a live shim's.
func listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("socket %s: another shim listens there", path)
	}
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func readPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: bad pid %q", path, b)
	}
	return pid, nil
}

// waitInit records the exit of the container's init: exit.json first,
// then the answer to waiters.
func (s *server) waitInit(ch <-chan unix.WaitStatus) {
	ws := <-ch
	e := &Exit{FinishedAt: time.Now()}
	if ws.Signaled() {
		e.Signal = int(ws.Signal())
		e.Code = 128 + e.Signal
	} else {
		e.Code = ws.ExitStatus()
	}
	if n := readOOMKills(s.oomFile); n > 0 && n > s.oomBase {
		e.OOMKilled = true
	}
	// Let the log catch up with what the container wrote last. Other
	// processes may hold the pipes (a container in a shared PID namespace):
	// do not wait for them long.
	deadline := time.Now().Add(2 * time.Second)
	for _, done := range s.logsDone {
		select {
		case <-done:
		case <-time.After(time.Until(deadline)):
		}
	}
	if err := atomicfile.WriteJSON(filepath.Join(s.cfg.Dir, exitFile), &exitRecord{V: ProtocolVersion, Exit: *e}); err != nil {
		logf("write the exit file: %v", err)
	}
	s.mu.Lock()
	s.status, s.exit = StatusExited, e
	s.mu.Unlock()
	close(s.exited)
	logf("container %s exited: code %d, signal %d, oom killed %v", s.cfg.ID, e.Code, e.Signal, e.OOMKilled)
}

func (s *server) accept() {
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			logf("accept: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		s.handlers.Add(1)
		go s.handle(conn)
	}
}

// handle answers the one request of a connection.
func (s *server) handle(conn *net.UnixConn) {
	defer s.handlers.Done()
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req request
	fc := &fdConn{UnixConn: conn}
	if err := json.NewDecoder(io.LimitReader(fc, 1<<20)).Decode(&req); err != nil {
		closeFds(fc.fds)
		return
	}
	conn.SetReadDeadline(time.Time{})
	files, err := fc.files(req.Fds, false)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var resp *response
	if err != nil {
		resp = errResponse(fmt.Errorf("pier-shim: %w", err))
	} else {
		resp = s.dispatch(conn, &req, files)
	}
	if resp == nil {
		return // the client went away
	}
	resp.V = ProtocolVersion
	deleted := req.Op == opDelete && resp.Error == ""
	if deleted {
		// From now on a client finds no shim, as after the exit.
		s.ln.Close()
	}
	conn.SetWriteDeadline(time.Now().Add(time.Minute))
	if err := json.NewEncoder(conn).Encode(resp); err != nil {
		logf("%s: answer: %v", req.Op, err)
	}
	switch {
	case deleted:
		s.doneOnce.Do(func() { close(s.done) })
	case req.Op == opExec:
		// Give the output buffers back.
		debug.FreeOSMemory()
	}
}

// dispatch answers a request, or returns nil when it has answered itself or
// the client went away. files were passed with the request.
func (s *server) dispatch(conn *net.UnixConn, req *request, files map[string]*os.File) *response {
	if req.V != ProtocolVersion {
		return &response{Code: codeVersion, Error: fmt.Sprintf("pier-shim: protocol version %d not supported, this shim speaks version %d", req.V, ProtocolVersion)}
	}
	var err error
	resp := &response{}
	switch req.Op {
	case opHello:
		resp.Pid = os.Getpid()
	case opState:
		resp.State = s.state()
	case opStart:
		err = s.start()
	case opKill:
		err = s.kill(syscall.Signal(req.Signal), req.All)
	case opWait:
		ctx, cancel := closedContext(conn)
		defer cancel()
		select {
		case <-s.exited:
			resp.Exit = s.state().Exit
		case <-ctx.Done():
			return nil
		}
	case opExec:
		if req.Exec == nil || len(req.Exec.Args) == 0 {
			err = errors.New("pier-shim: exec: no command")
			break
		}
		ctx, cancel := closedContext(conn)
		defer cancel()
		resp.Exec, err = s.exec(ctx, req.Exec)
	case opReopen:
		if err = s.log.reopen(); err != nil {
			err = fmt.Errorf("pier-shim: reopen the log: %w", err)
		}
	case opDelete:
		err = s.delete()
	case opAttach:
		return s.attach(conn, req.Attach)
	case opExecStream:
		return s.execStream(conn, req, files)
	default:
		err = fmt.Errorf("pier-shim: unknown operation %q", req.Op)
	}
	if err != nil {
		return errResponse(err)
	}
	return resp
}

// errResponse is the answer that reports err.
func errResponse(err error) *response {
	resp := &response{V: ProtocolVersion, Error: err.Error()}
	switch {
	case errors.Is(err, oci.ErrNotFound):
		resp.Code = codeNotFound
	case errors.Is(err, ErrNotRunning):
		resp.Code = codeNotRunning
	}
	return resp
}

// closedContext is done when the client closes its end of conn (it sends
// nothing after its request).
func closedContext(conn *net.UnixConn) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		var b [1]byte
		conn.Read(b[:])
		cancel()
	}()
	return ctx, cancel
}

func (s *server) state() *State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return &State{
		Status:    s.status,
		Pid:       s.pid,
		ShimPid:   os.Getpid(),
		CreatedAt: s.createdAt,
		StartedAt: s.startedAt,
		Exit:      s.exit,
	}
}

func (s *server) currentStatus() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

var errExited = fmt.Errorf("pier-shim: the container has exited: %w", ErrNotRunning)

// start runs the container's process. If the runtime fails, the
// container's init is killed: its exit is recorded as any other.
func (s *server) start() error {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	switch s.currentStatus() {
	case StatusExited:
		return errExited
	case StatusRunning:
		return errors.New("pier-shim: the container is already started")
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err := s.reap.run(func() error { return s.rt.Start(ctx, s.cfg.ID) })
	if err != nil {
		s.reap.kill(s.pid, unix.SIGKILL)
		return err
	}
	s.mu.Lock()
	s.startedAt = time.Now()
	if s.status == StatusCreated {
		s.status = StatusRunning
	}
	s.mu.Unlock()
	return nil
}

func (s *server) kill(sig syscall.Signal, all bool) error {
	if s.currentStatus() == StatusExited {
		return errExited
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err := s.reap.run(func() error { return s.rt.Kill(ctx, s.cfg.ID, sig, all) })
	if err != nil {
		// The runtime refuses a container whose init has died: reap it now
		// to tell.
		s.reap.reap()
		if !s.reap.pending(s.pid) {
			return fmt.Errorf("%w (%v)", errExited, err)
		}
	}
	return err
}

// delete kills the container if it runs and waits for its exit (so that
// exit.json is written and the OOM counter read before the cgroup goes),
// then deletes it from the runtime.
func (s *server) delete() error {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.deleted {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if s.currentStatus() != StatusExited {
		if err := s.reap.run(func() error { return s.rt.Kill(ctx, s.cfg.ID, unix.SIGKILL, true) }); err != nil {
			logf("delete: kill: %v", err)
			s.reap.kill(s.pid, unix.SIGKILL)
		}
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			s.reap.kill(s.pid, unix.SIGKILL)
			select {
			case <-s.exited:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("pier-shim: the container's init (pid %d) does not exit after SIGKILL", s.pid)
			}
		}
	}
	err := s.reap.run(func() error { return s.rt.Delete(ctx, s.cfg.ID, false) })
	if err != nil && !errors.Is(err, oci.ErrNotFound) {
		logf("delete: %v; forcing", err)
		err = s.reap.run(func() error { return s.rt.Delete(ctx, s.cfg.ID, true) })
	}
	if err != nil && !errors.Is(err, oci.ErrNotFound) {
		return err
	}
	s.deleted = true
	return nil
}
