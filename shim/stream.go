package shim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/pier-runtime/pier/shim/protocol"
)

// ExecStreamRequest is a process to run in the container with its stdio
// wired to the caller's files (the exec of CRI streaming).
type ExecStreamRequest struct {
	protocol.ExecRequest // Timeout is not used: Kill ends the process.

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
	req := &protocol.Request{Op: protocol.OpExecStream, Exec: &r.ExecRequest, Tty: r.Tty, Width: r.Width, Height: r.Height}
	var files []*os.File
	if !r.Tty {
		for i, f := range []*os.File{r.Stdin, r.Stdout, r.Stderr} {
			if f != nil {
				files = append(files, f)
				req.Fds = append(req.Fds, [...]string{protocol.FdStdin, protocol.FdStdout, protocol.FdStderr}[i])
			}
		}
	}
	sc, got, err := c.open(ctx, req, files)
	if err != nil {
		return nil, err
	}
	return &Process{pid: sc.first.Pid, pty: got[protocol.FdPty], sc: sc}, nil
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
		var resp protocol.Response
		err := p.sc.dec.Decode(&resp)
		if err == nil {
			// The connection closes as the helper exits: once it has,
			// the process's slot is free (ExecSync's bounds).
			p.sc.conn.SetReadDeadline(time.Now().Add(time.Second))
			io.Copy(io.Discard, io.LimitReader(p.sc.conn, 1<<10))
		}
		p.sc.conn.Close()
		switch {
		case err != nil:
			p.err = fmt.Errorf("shim exec-stream: connection closed before the exit (%v): %w", err, ErrUnavailable)
		case resp.Error != "":
			p.err = &protocol.RemoteError{Msg: resp.Error, Code: resp.Code}
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
func (p *Process) Kill() error { return p.kill() }

func (p *Process) kill() error {
	// The shim answers at once: a helper that does not is given up on.
	p.sc.conn.SetReadDeadline(time.Now().Add(killAnswer))
	err := p.sc.conn.CloseWrite()
	if errors.Is(err, net.ErrClosed) {
		return nil // waited for
	}
	return err
}

// killAnswer is how long Wait waits for the shim's answer after Kill.
const killAnswer = 10 * time.Second

// streamConn is a connection that outlives its first answer.
type streamConn struct {
	conn  *net.UnixConn
	dec   *json.Decoder
	first *protocol.Response
}

// open sends req with files (named in req.Fds) on a new connection and
// reads the first answer and the files passed with it (non-blocking, for
// the caller's poller). The connection stays open; ctx bounds only this.
func (c *Client) open(ctx context.Context, req *protocol.Request, files []*os.File) (*streamConn, map[string]*os.File, error) {
	req.V = protocol.Version
	conn, err := c.dial(ctx, req.Op)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
	}
	err = protocol.WriteMsg(conn, req, fds)
	runtime.KeepAlive(files)
	fc := &protocol.FdConn{UnixConn: conn}
	sc := &streamConn{conn: conn, dec: json.NewDecoder(fc), first: &protocol.Response{}}
	if err == nil {
		err = sc.dec.Decode(sc.first)
	}
	if !stop() && err == nil {
		err = ctx.Err()
	}
	var got map[string]*os.File
	if err == nil {
		conn.SetDeadline(time.Time{})
		got, err = fc.Files(sc.first.Fds, true)
		if err != nil {
			err = fmt.Errorf("shim %s %s: %w", c.socket, req.Op, err)
		}
	} else {
		protocol.CloseFds(fc.Fds)
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
