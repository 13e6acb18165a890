package shim

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// AttachRequest says which of the container's streams an attachment wants.
type AttachRequest struct {
	Stdin  bool `json:"stdin,omitempty"`
	Stdout bool `json:"stdout,omitempty"`
	Stderr bool `json:"stderr,omitempty"`
}

// Attachment is a connection to a running container's standard streams.
// Its files are the caller's; Close closes them.
type Attachment struct {
	// Stdin is the write end of the container's stdin: a duplicate of its
	// stdin pipe, or of the pty master for a tty container. It is nil unless
	// requested and the container's stdin is open (Config.Stdin, and not yet
	// closed by StdinOnce).
	Stdin *os.File
	// Stdout is the read end of a pipe carrying the container's standard
	// output (a tty container's terminal output, \r\n and all).
	Stdout *os.File
	// Stderr is the read end of a pipe carrying its standard error; nil for
	// a tty container.
	Stderr *os.File

	conn *net.UnixConn
	pty  *os.File // tty: the pty master, for Resize
}

// Attach attaches to the container's streams (it may be created or
// running; an exited container is ErrNotRunning). The shim copies each
// chunk of output to every attachment without waiting: an attachment whose
// pipe is full (64 KiB unread) loses that chunk. The output pipes reach
// their end when the container's output does.
func (c *Client) Attach(ctx context.Context, r AttachRequest) (*Attachment, error) {
	sc, files, err := c.open(ctx, &request{Op: opAttach, Attach: &r}, nil)
	if err != nil {
		return nil, err
	}
	return &Attachment{
		Stdin:  files["stdin"],
		Stdout: files["stdout"],
		Stderr: files["stderr"],
		conn:   sc.conn,
		pty:    files["pty"],
	}, nil
}

// Resize sets the size of a tty container's terminal; other containers
// have none.
func (a *Attachment) Resize(width, height uint16) error {
	return setWinsize(a.pty, width, height)
}

// Close ends the attachment: the shim stops copying output to it and, with
// StdinOnce, closes the container's stdin (for a tty, it types the
// terminal's end-of-file character, ^D, once, and gives later attachments
// no stdin). It closes the attachment's files.
func (a *Attachment) Close() error {
	for _, f := range []*os.File{a.Stdin, a.Stdout, a.Stderr, a.pty} {
		if f != nil {
			f.Close()
		}
	}
	err := a.conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// streams is the container's stdio as the shim keeps it for attachers.
type streams struct {
	tty       bool
	stdinOnce bool
	pty       *os.File // tty: the pty master, read by the log's copy

	mu        sync.Mutex
	stdin     int  // no tty: the write end of the container's stdin pipe; -1 when none or closed
	ptyStdin  bool // tty: attachers may type
	ended     [2]bool
	attachers map[*attacher]struct{}
}

// attacher is one attachment: the write ends (non-blocking) of its output
// pipes, -1 when none.
type attacher struct {
	out   [2]int // stdout, stderr
	stdin bool   // it was given stdin
}

var streamNames = [2]string{"stdout", "stderr"}

// tee returns the function that copies chunks of output stream i to the
// attachers, never waiting for them.
func (st *streams) tee(i int) func([]byte) {
	return func(b []byte) {
		st.mu.Lock()
		for a := range st.attachers {
			if fd := a.out[i]; fd >= 0 {
				unix.Write(fd, b) // EAGAIN: the attacher loses the chunk
			}
		}
		st.mu.Unlock()
	}
}

// end records that output stream i has reached its end and ends it for
// the attachers.
func (st *streams) end(i int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.ended[i] = true
	for a := range st.attachers {
		closeFds(a.out[i : i+1])
		a.out[i] = -1
	}
}

// attach adds an attacher and returns the file descriptors and names to
// hand it; they are the caller's to close once sent.
func (st *streams) attach(req *AttachRequest) (a *attacher, fds []int, names []string, err error) {
	a = &attacher{out: [2]int{-1, -1}}
	defer func() {
		if err != nil {
			closeFds(fds)
			closeFds(a.out[:])
		}
	}()
	add := func(fd int, name string) {
		fds, names = append(fds, fd), append(names, name)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	var fd int
	switch {
	case st.tty:
		if fd, err = dupFile(st.pty); err != nil {
			return nil, nil, nil, err
		}
		add(fd, "pty")
		if req.Stdin && st.ptyStdin {
			if fd, err = dupFile(st.pty); err != nil {
				return nil, nil, nil, err
			}
			add(fd, "stdin")
			a.stdin = true
		}
	case req.Stdin && st.stdin >= 0:
		if fd, err = unix.FcntlInt(uintptr(st.stdin), unix.F_DUPFD_CLOEXEC, 0); err != nil {
			return nil, nil, nil, err
		}
		add(fd, "stdin")
		a.stdin = true
	}
	for i, want := range []bool{req.Stdout, req.Stderr && !st.tty} {
		if !want {
			continue
		}
		var p [2]int
		if err = unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return nil, nil, nil, err
		}
		add(p[0], streamNames[i])
		if st.ended[i] {
			unix.Close(p[1])
			continue
		}
		a.out[i] = p[1]
		if err = unix.SetNonblock(p[1], true); err != nil {
			return nil, nil, nil, err
		}
	}
	if st.attachers == nil {
		st.attachers = make(map[*attacher]struct{})
	}
	st.attachers[a] = struct{}{}
	return a, fds, names, nil
}

// detach drops an attacher; with StdinOnce, the end of one that had stdin
// closes the container's stdin.
func (st *streams) detach(a *attacher) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.attachers, a)
	closeFds(a.out[:])
	if !a.stdin || !st.stdinOnce {
		return
	}
	if !st.tty {
		closeFds([]int{st.stdin})
		st.stdin = -1
		return
	}
	if !st.ptyStdin {
		return
	}
	st.ptyStdin = false
	// A terminal has no end of input but what its line discipline makes of
	// the end-of-file character.
	if rc, err := st.pty.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			eof := byte(4)
			if t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS); err == nil && t.Cc[unix.VEOF] != 0 {
				eof = t.Cc[unix.VEOF]
			}
			unix.Write(int(fd), []byte{eof})
		})
	}
}

// attach serves an attach request: it answers with the attachment's files,
// then copies output to it until the client hangs up or the container has
// exited.
func (s *server) attach(conn *net.UnixConn, req *AttachRequest) *response {
	if req == nil {
		req = &AttachRequest{}
	}
	if s.currentStatus() == StatusExited {
		return errResponse(errExited)
	}
	a, fds, names, err := s.streams.attach(req)
	if err != nil {
		return errResponse(err)
	}
	defer s.streams.detach(a)
	err = writeMsg(conn, &response{V: ProtocolVersion, Fds: names}, fds)
	closeFds(fds)
	if err != nil {
		return nil
	}
	ctx, cancel := closedContext(conn)
	defer cancel()
	select {
	case <-ctx.Done():
	case <-s.exited:
	case <-s.done:
	}
	return nil
}
