// Package server is the Go part of pier-shim, the per-container shim (its
// main is cmd/pier-shim). "pier-shim serve <dir>" runs the OCI runtime's
// create for the container described by <dir>/shim.json, answers pierd's
// handshake and execs pier-shim-monitor (C) in its place for the
// container's life, handing it the control socket's listener, the
// container's output pipes or pty master, its stdin and its log. "pier-shim
// exec <dir> <status>" is run by the monitor for each exec and exec-stream
// request, which it hands over unread on fd 3: it runs the runtime's exec
// as the processes' subreaper and answers on the connection. The wire
// format is package protocol's.
//
// The binary is small on purpose: no gRPC, no klog, one P, a small heap.
package server

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
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/internal/beneath"
	"github.com/pier-runtime/pier/oci"
	"github.com/pier-runtime/pier/shim/protocol"
)

// handshakeFd is the pipe Start hands the shim for its one handshake
// message.
const handshakeFd = 3

// Main is pier-shim's main:
//
//	pier-shim serve <dir>   the shim of the container described by <dir>/shim.json (see Start)
//	pier-shim exec <dir> <status>   answers the exec request on fd 3 (run by the monitor)
func Main(args []string) {
	// Short-lived: one P, a small heap, no memory profiling.
	runtime.MemProfileRate = 0
	runtime.GOMAXPROCS(1)
	debug.SetGCPercent(10)
	switch {
	case len(args) == 3 && args[1] == "serve":
		os.Exit(serve(args[2]))
	case len(args) == 4 && args[1] == "exec":
		os.Exit(serveExec(args[2], args[3]))
	}
	fmt.Fprintln(os.Stderr, "usage: pier-shim serve <dir>\n\npier-shim is started by pierd, one per container.")
	os.Exit(2)
}

// logf writes a line to the shim's log (its standard error, <dir>/shim.log).
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format(time.RFC3339Nano)+" pier-shim["+strconv.Itoa(os.Getpid())+"] "+format+"\n", args...)
}

// server is the Go side of a container's shim: the create, in "serve"
// mode, before the shim becomes the monitor; one exec, in "exec" mode.
type server struct {
	cfg  protocol.Config
	rt   *oci.Runtime
	reap *reaper

	// Made by create and handed to the monitor.
	ln      *net.UnixListener
	ctrLog  *os.File    // the CRI log; nil when the output is discarded
	outputs [2]*os.File // read ends of the stdout and stderr pipes (no tty)
	pty     int         // tty: the pty master, else -1
	stdin   int         // no tty: the write end of the stdin pipe, else -1
	oomFile string      // the container's OOM kill counter
	oomBase int64       // its value after create
	pid     int         // the container's init
	created time.Time

	status string // exec mode: the container's, as the monitor knows it
}

// serve runs the shim of the container described by dir/shim.json: the
// runtime's create and the handshake, then it becomes the monitor (the
// pier-shim-monitor beside it) for the rest of the container's life. It
// returns only on failure, with the exit code.
func serve(dir string) int {
	if _, err := unix.FcntlInt(handshakeFd, unix.F_GETFD, 0); err != nil {
		fmt.Fprintln(os.Stderr, "pier-shim: no handshake pipe on fd 3: pier-shim is started by pierd")
		return 2
	}
	// Neither the runtime nor the container may hold the handshake pipe.
	unix.CloseOnExec(handshakeFd)
	hs := os.NewFile(handshakeFd, "handshake")

	exe, monitor, err := monitorBinary()
	var s *server
	if err == nil {
		s, err = newServer(dir)
	}
	if err == nil {
		err = s.create()
	}
	msg := protocol.Handshake{V: protocol.Version}
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
		s.undo()
		return 1
	}
	logf("container %s created, init pid %d", s.cfg.ID, s.pid)
	err = s.becomeMonitor(exe, monitor)
	// Only a failed exec returns: pierd finds no shim, and no exit file.
	logf("exec %s: %v; deleting the container", monitor, err)
	s.undo()
	return 1
}

// monitorBinary returns this binary and pier-shim-monitor beside it.
func monitorBinary() (exe, monitor string, err error) {
	if exe, err = os.Executable(); err != nil {
		return "", "", fmt.Errorf("pier-shim: %w", err)
	}
	monitor = filepath.Join(filepath.Dir(exe), "pier-shim-monitor")
	if err := unix.Access(monitor, unix.X_OK); err != nil {
		return "", "", fmt.Errorf("pier-shim: %s: %w: install pier-shim-monitor beside pier-shim", monitor, err)
	}
	return exe, monitor, nil
}

// becomeMonitor execs the monitor in the shim's place (same pid, session
// and subreaper flag), handing it the descriptors create made. It returns
// only on failure.
func (s *server) becomeMonitor(exe, monitor string) error {
	fd := func(f *os.File) int {
		if f == nil {
			return -1
		}
		return int(f.Fd())
	}
	lf, err := s.ln.File()
	if err != nil {
		return err
	}
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	fds := []int{int(lf.Fd()), fd(s.ctrLog), s.stdin, fd(s.outputs[0]), fd(s.outputs[1]), s.pty}
	// The monitor gets these and its stdio, nothing else: not even what the
	// shim inherited from pierd's parents.
	if err := closeOnExecAllBut(append([]int{0, 1, 2}, fds...)); err != nil {
		return err
	}
	for _, f := range fds {
		if f >= 0 {
			if _, err := unix.FcntlInt(uintptr(f), unix.F_SETFD, 0); err != nil {
				return err
			}
		}
	}
	// log= is the log's path, as it always was; the monitor reopens it as
	// log-name= beneath log-dir=.
	var logDir, logName string
	if s.cfg.LogPath != "" {
		logDir, logName, _ = s.logName() // create checked it
	}
	args := []string{"pier-shim", "monitor",
		"id=" + s.cfg.ID, "dir=" + s.cfg.Dir, "socket=" + s.cfg.Socket, "log=" + s.cfg.LogPath,
		"log-dir=" + logDir, "log-name=" + logName,
		"pid=" + strconv.Itoa(s.pid), fmt.Sprintf("created=%d.%09d", s.created.Unix(), s.created.Nanosecond()),
		"oom=" + s.oomFile, "oom-base=" + strconv.FormatInt(s.oomBase, 10),
		"helper=" + exe,
		"tty=" + flag(s.cfg.Tty), "stdin-once=" + flag(s.cfg.StdinOnce), "pty-stdin=" + flag(s.cfg.Tty && s.cfg.Stdin),
		"listen-fd=" + strconv.Itoa(fds[0]), "log-fd=" + strconv.Itoa(fds[1]), "stdin-fd=" + strconv.Itoa(fds[2]),
		"stdout-fd=" + strconv.Itoa(fds[3]), "stderr-fd=" + strconv.Itoa(fds[4]), "pty-fd=" + strconv.Itoa(fds[5]),
	}
	err = unix.Exec(monitor, args, os.Environ())
	// Until the exec, the files whose descriptors the monitor gets must stay
	// reachable: the garbage collector's finaliser of an unreachable
	// *os.File closes its descriptor (lf is used above only through its
	// number), which made the exec fail under load with EBADF.
	runtime.KeepAlive(lf)
	runtime.KeepAlive(s.ctrLog)
	runtime.KeepAlive(s.outputs)
	return err
}

// closeOnExecAllBut marks every open descriptor but keep close-on-exec.
func closeOnExecAllBut(keep []int) error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || slices.Contains(keep, fd) {
			continue
		}
		unix.CloseOnExec(fd) // the directory's own descriptor is gone: harmless
	}
	return nil
}

// undo kills and deletes the created container and removes the socket.
func (s *server) undo() {
	s.reap.kill(s.pid, unix.SIGKILL)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.reap.run(func() error { return s.rt.Delete(ctx, s.cfg.ID, true) }); err != nil && !errors.Is(err, oci.ErrNotFound) {
		logf("delete: %v", err)
	}
	s.ln.Close()
}

// serveExec answers the one exec or exec-stream request waiting on the
// connection on fd 3, which the monitor handed over unread; status is the
// container's. The processes it starts are its children (it is their
// subreaper); it exits once the request is answered. It first joins the
// container's cgroups (joinContainerCgroups).
func serveExec(dir, status string) int {
	s, err := newServer(dir)
	if err != nil {
		logf("exec: %v", err)
		return 1
	}
	s.status = status
	if s.reap, err = newReaper(); err != nil {
		logf("exec: %v", err)
		return 1
	}
	s.reap.start()
	f := os.NewFile(3, "conn")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		logf("exec: the connection on fd 3: %v", err)
		return 1
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		logf("exec: fd 3 is not a unix connection")
		return 1
	}
	if status != protocol.StatusExited {
		s.joinContainerCgroups()
	}
	s.handle(conn)
	return 0
}

func newServer(dir string) (*server, error) {
	cfg, err := protocol.ReadConfig(dir)
	if err != nil {
		return nil, fmt.Errorf("pier-shim: %w", err)
	}
	return &server{cfg: *cfg, rt: &cfg.Runtime, pty: -1, stdin: -1}, nil
}

// create opens the log and the control socket, becomes the subreaper and
// runs the runtime's create with the container's output on two pipes. On
// failure it leaves nothing: no runtime state, no socket.
func (s *server) create() (err error) {
	ctx := context.Background()
	os.Remove(filepath.Join(s.cfg.Dir, protocol.ExitFile))
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
	if s.cfg.LogPath != "" {
		var dir, name string
		if dir, name, err = s.logName(); err == nil {
			s.ctrLog, err = beneath.OpenFile(dir, name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		}
		if err != nil {
			return fmt.Errorf("pier-shim: open the container's log: %w", err)
		}
		defer func() {
			if err != nil {
				s.ctrLog.Close()
			}
		}()
	}
	if s.ln, err = listen(s.cfg.Socket); err != nil {
		return fmt.Errorf("pier-shim: %w", err)
	}
	defer func() {
		if err != nil {
			s.ln.Close()
		}
	}()
	// The monitor reaps; until then nothing does (os/exec waits for the
	// runtime itself).
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
		protocol.CloseFds([]int{s.stdin})
		s.stdin = -1
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
				stdinR, s.stdin = os.NewFile(uintptr(p[0]), "stdin"), p[1]
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
		s.reap.register(pid)
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
	s.created = time.Now()
	s.pty = master
	s.outputs = [2]*os.File{pipes[0], pipes[2]}
	return nil
}

// logName splits the container's log path into the directory it is opened
// beneath (Config.LogDir) and its path there, which the monitor opens
// again at each reopen.
func (s *server) logName() (dir, name string, err error) {
	dir = s.cfg.LogDir
	if dir == "" {
		dir = filepath.Dir(s.cfg.LogPath)
	}
	name, err = filepath.Rel(dir, s.cfg.LogPath)
	if err != nil || !filepath.IsLocal(name) {
		return "", "", fmt.Errorf("the log %s is not in the directory %s", s.cfg.LogPath, dir)
	}
	return dir, name, nil
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

// handle answers the one request of a connection: exec or exec-stream, the
// operations the monitor hands over.
//
// It leaves conn open: the helper exits right after, and the kernel closes
// it as the helper ends, so that pierd, which reads to the end of the
// connection after the answer, frees the exec's slot only once the helper
// is on its way out (ExecSync's bounds count helpers).
func (s *server) handle(conn *net.UnixConn) {
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req protocol.Request
	fc := &protocol.FdConn{UnixConn: conn}
	if err := json.NewDecoder(io.LimitReader(fc, protocol.MaxRequest)).Decode(&req); err != nil {
		protocol.CloseFds(fc.Fds)
		return
	}
	conn.SetReadDeadline(time.Time{})
	files, err := fc.Files(req.Fds, false)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var resp *protocol.Response
	if err != nil {
		resp = protocol.ErrorResponse(fmt.Errorf("pier-shim: %w", err))
	} else {
		resp = s.dispatch(conn, &req, files)
	}
	if resp == nil {
		return // the client went away
	}
	resp.V = protocol.Version
	conn.SetWriteDeadline(time.Now().Add(time.Minute))
	if err := json.NewEncoder(conn).Encode(resp); err != nil {
		logf("%s: answer: %v", req.Op, err)
	}
}

// dispatch answers a request, or returns nil when it has answered itself or
// the client went away. files were passed with the request.
func (s *server) dispatch(conn *net.UnixConn, req *protocol.Request, files map[string]*os.File) *protocol.Response {
	if req.V != protocol.Version {
		return &protocol.Response{Code: protocol.CodeVersion, Error: fmt.Sprintf("pier-shim: protocol version %d not supported, this shim speaks version %d", req.V, protocol.Version)}
	}
	switch req.Op {
	case protocol.OpExec:
		if req.Exec == nil || len(req.Exec.Args) == 0 {
			return protocol.ErrorResponse(errors.New("pier-shim: exec: no command"))
		}
		ctx, cancel := closedContext(conn)
		defer cancel()
		res, err := s.exec(ctx, req.Exec)
		if err != nil {
			return protocol.ErrorResponse(err)
		}
		return &protocol.Response{Exec: res}
	case protocol.OpExecStream:
		return s.execStream(conn, req, files)
	}
	return protocol.ErrorResponse(fmt.Errorf("pier-shim exec: operation %q is the monitor's", req.Op))
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

var errExited = fmt.Errorf("pier-shim: the container has exited: %w", protocol.ErrNotRunning)
