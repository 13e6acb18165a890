package shim

import (
	"context"
	"errors"
	"net"
	"os"

	"github.com/pier-runtime/pier/shim/protocol"
)

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
func (c *Client) Attach(ctx context.Context, r protocol.AttachRequest) (*Attachment, error) {
	sc, files, err := c.open(ctx, &protocol.Request{Op: protocol.OpAttach, Attach: &r}, nil)
	if err != nil {
		return nil, err
	}
	return &Attachment{
		Stdin:  files[protocol.FdStdin],
		Stdout: files[protocol.FdStdout],
		Stderr: files[protocol.FdStderr],
		conn:   sc.conn,
		pty:    files[protocol.FdPty],
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
