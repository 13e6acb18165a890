package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/oci"
)

// ExecStreamRequest is a process to run in the container with its stdio
// wired to the caller's files (the exec of CRI streaming).
type ExecStreamRequest struct {
	ExecRequest // Timeout is not used: Kill ends the process.

	// Tty gives the process a terminal: Process.Pty is its master, of the
	// size Width x Height when both are set.
	Tty           bool
	Width, Height uint16

	// Without a terminal, the process's stdio: the caller makes pipes and
	// passes the process's ends (they are put in blocking mode); nil is
	// /dev/null. ExecStream sends them to the shim, which closes its copies
	// once the process runs; the caller closes its own after ExecStream
	// returns.
	Stdin, Stdout, Stderr *os.File
}

// Process is a process started by ExecStream.
type Process struct {
	pid  int
	pty  *os.File
	sc   *streamConn
	once sync.Once
	code int
	err  error
}

// ExecStream starts a process in the running container and returns once it
// runs. The caller must call Wait, which releases the connection. A process
// the runtime cannot start is an error carrying the runtime's message. If
// the connection breaks before the process exits (the caller died), the
// shim kills it.
func (c *Client) ExecStream(ctx context.Context, r ExecStreamRequest) (*Process, error) {
	if len(r.Args) == 0 {
		return nil, errors.New("shim exec-stream: no command")
	}
	req := &request{Op: opExecStream, Exec: &r.ExecRequest, Tty: r.Tty, Width: r.Width, Height: r.Height}
	var files []*os.File
	if !r.Tty {
		for i, f := range []*os.File{r.Stdin, r.Stdout, r.Stderr} {
			if f != nil {
				files = append(files, f)
				req.Fds = append(req.Fds, [...]string{"stdin", "stdout", "stderr"}[i])
			}
		}
	}
	sc, got, err := c.open(ctx, req, files)
	if err != nil {
		return nil, err
	}
	return &Process{pid: sc.first.Pid, pty: got["pty"], sc: sc}, nil
}

// Pid is the process's pid, as the shim sees it.
func (p *Process) Pid() int { return p.pid }

// Pty is the master of a tty process's terminal, nil otherwise: read its
// output from it (it fails with EIO once the terminal is closed and read),
// write its input to it. It is the caller's to close.
func (p *Process) Pty() *os.File { return p.pty }

// Resize sets the size of the process's terminal.
func (p *Process) Resize(width, height uint16) error {
	return setWinsize(p.pty, width, height)
}

// Wait waits for the process to exit and returns its exit code: its exit
// status, or 128+signal when a signal killed it. It closes the connection
// to the shim.
func (p *Process) Wait() (int, error) {
	p.once.Do(func() {
		var resp response
		err := p.sc.dec.Decode(&resp)
		p.sc.conn.Close()
		switch {
		case err != nil:
			p.err = fmt.Errorf("shim exec-stream: connection closed before the exit (%v): %w", err, ErrUnavailable)
		case resp.Error != "":
			p.err = &remoteError{msg: resp.Error, code: resp.Code}
		case resp.Exec == nil:
			p.err = errors.New("shim exec-stream: empty answer")
		default:
			p.code = resp.Exec.ExitCode
		}
	})
	return p.code, p.err
}

// Kill makes the shim kill the process (SIGKILL); Wait then returns its
// exit code, 137.
func (p *Process) Kill() error {
	err := p.sc.conn.CloseWrite()
	if errors.Is(err, net.ErrClosed) {
		return nil // waited for
	}
	return err
}

// streamConn is a connection that outlives its first answer.
type streamConn struct {
	conn  *net.UnixConn
	dec   *json.Decoder
	first *response
}

// open sends req with files (named in req.Fds) on a new connection and
// reads the first answer and the files passed with it (non-blocking, for
// the caller's poller). The connection stays open; ctx bounds only this.
func (c *Client) open(ctx context.Context, req *request, files []*os.File) (*streamConn, map[string]*os.File, error) {
	req.V = ProtocolVersion
	conn, err := c.dial(ctx, req.Op)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	err = writeMsg(conn, req, fds)
	runtime.KeepAlive(files)
	fc := &fdConn{UnixConn: conn}
	sc := &streamConn{conn: conn, dec: json.NewDecoder(fc), first: &response{}}
	if err == nil {
		err = sc.dec.Decode(sc.first)
	}
	if !stop() && err == nil {
		err = ctx.Err()
	}
	var got map[string]*os.File
	if err == nil {
		conn.SetDeadline(time.Time{})
		got, err = fc.files(sc.first.Fds, true)
		if err != nil {
			err = fmt.Errorf("shim %s %s: %w", c.socket, req.Op, err)
		}
	} else {
		closeFds(fc.fds)
		err = c.connErr(ctx, req.Op, err)
	}
	if err == nil {
		err = c.answerErr(req.Op, sc.first)
	}
	if err != nil {
		for _, f := range got {
			f.Close()
		}
		conn.Close()
		return nil, nil, err
	}
	return sc, got, nil
}

// execStream serves an exec-stream request: it starts the process with the
// files passed (or a terminal), answers with its pid (and the pty master),
// then waits for it and sends its exit. When the client hangs up first, it
// kills the process.
func (s *server) execStream(conn *net.UnixConn, req *request, files map[string]*os.File) *response {
	if req.Exec == nil || len(req.Exec.Args) == 0 {
		return errResponse(errors.New("pier-shim: exec-stream: no command"))
	}
	if err := s.checkRunning(); err != nil {
		return errResponse(err)
	}
	p, err := s.execProcess(req.Exec)
	if err != nil {
		return errResponse(err)
	}
	ctx, cancel := closedContext(conn)
	defer cancel()
	var opts oci.ExecOpts
	var console *consoleSocket
	if req.Tty {
		p.Terminal = true
		if req.Width > 0 && req.Height > 0 {
			p.ConsoleSize = &specs.Box{Width: uint(req.Width), Height: uint(req.Height)}
		}
		if console, err = newConsoleSocket(s.cfg.Dir); err != nil {
			return errResponse(err)
		}
		defer console.close() // again: harmless
		opts.ConsoleSocket = console.path()
	} else {
		opts.IO = oci.IO{Stdin: files["stdin"], Stdout: files["stdout"], Stderr: files["stderr"]}
		if opts.Stderr == nil {
			// Not the driver's temporary file: the process would fill it.
			null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				return errResponse(err)
			}
			defer null.Close()
			opts.Stderr = null
		}
	}
	pid, exited, err := s.runExec(ctx, p, opts)
	// The process has its own: the client sees its output end with it.
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return errResponse(err)
	}
	var fds []int
	var names []string
	if console != nil {
		master, err := console.receive()
		console.close()
		if err != nil {
			s.reap.kill(pid, unix.SIGKILL)
			<-exited
			return errResponse(err)
		}
		fds, names = []int{master}, []string{"pty"}
	}
	err = writeMsg(conn, &response{V: ProtocolVersion, Pid: pid, Fds: names}, fds)
	closeFds(fds)
	if err != nil {
		cancel()
	}
	var ws unix.WaitStatus
	select {
	case ws = <-exited:
	case <-ctx.Done():
		s.reap.kill(pid, unix.SIGKILL)
		ws = <-exited
	}
	if err == nil {
		writeMsg(conn, &response{V: ProtocolVersion, Exec: &ExecResult{ExitCode: exitCode(ws)}}, nil)
	}
	return nil
}
