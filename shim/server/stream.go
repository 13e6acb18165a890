package server

import (
	"errors"
	"net"
	"os"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/oci"
	"github.com/pier-runtime/pier/shim/protocol"
)

// execStream serves an exec-stream request: it starts the process with the
// files passed (or a terminal), answers with its pid (and the pty master),
// then waits for it and sends its exit. When the client hangs up first, it
// kills the process.
func (s *server) execStream(conn *net.UnixConn, req *protocol.Request, files map[string]*os.File) *protocol.Response {
	if req.Exec == nil || len(req.Exec.Args) == 0 {
		return protocol.ErrorResponse(errors.New("pier-shim: exec-stream: no command"))
	}
	if err := s.checkRunning(); err != nil {
		return protocol.ErrorResponse(err)
	}
	p, err := s.execProcess(req.Exec)
	if err != nil {
		return protocol.ErrorResponse(err)
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
			return protocol.ErrorResponse(err)
		}
		defer console.close() // again: harmless
		opts.ConsoleSocket = console.path()
	} else {
		opts.IO = oci.IO{Stdin: files[protocol.FdStdin], Stdout: files[protocol.FdStdout], Stderr: files[protocol.FdStderr]}
		if opts.Stderr == nil {
			// Not the driver's temporary file: the process would fill it.
			null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
			if err != nil {
				return protocol.ErrorResponse(err)
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
		return protocol.ErrorResponse(err)
	}
	var fds []int
	var names []string
	if console != nil {
		master, err := console.receive()
		console.close()
		if err != nil {
			s.reap.kill(pid, unix.SIGKILL)
			<-exited
			return protocol.ErrorResponse(err)
		}
		fds, names = []int{master}, []string{protocol.FdPty}
	}
	err = protocol.WriteMsg(conn, &protocol.Response{V: protocol.Version, Pid: pid, Fds: names}, fds)
	protocol.CloseFds(fds)
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
		protocol.WriteMsg(conn, &protocol.Response{V: protocol.Version, Exec: &protocol.ExecResult{ExitCode: exitCode(ws)}}, nil)
	}
	return nil
}
