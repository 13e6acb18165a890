package container

import (
	"context"
	"fmt"
	"os"

	"github.com/pier-runtime/pier/shim"
	"github.com/pier-runtime/pier/shim/protocol"
)

// ExecStreamRequest is an interactive process to run in a container, as
// the container's user.
type ExecStreamRequest struct {
	Args []string
	// Tty gives the process a terminal (Process.Pty), of the size Width x
	// Height when both are set.
	Tty           bool
	Width, Height uint16
	// Without a terminal, the process's stdio: the caller makes pipes and
	// passes the process's ends; nil is /dev/null. The caller closes them
	// once ExecStream has returned.
	Stdin, Stdout, Stderr *os.File
}

// Process is a process started by ExecStream.
type Process interface {
	// Pty is the master of a tty process's terminal (the caller's to
	// close), nil otherwise.
	Pty() *os.File
	// Resize sets the size of its terminal.
	Resize(width, height uint16) error
	// Wait waits for it to exit and returns its exit status, or
	// 128+signal.
	Wait() (int, error)
	// Kill kills it (SIGKILL); Wait then returns 137.
	Kill() error
}

// ExecStream starts an interactive process in a running container, as the
// container's user; its stdio are the files in r (or a pty, with Tty).
func (m *Manager) ExecStream(ctx context.Context, id string, r ExecStreamRequest) (Process, error) {
	c, l, err := m.client(id)
	if err != nil {
		return nil, err
	}
	if c.State != Running || l == nil || l.client == nil {
		return nil, fmt.Errorf("%w: container %s is %s", ErrNotRunning, c.ID, stateName(c.State))
	}
	if len(r.Args) == 0 {
		return nil, fmt.Errorf("%w: no command to run", ErrInvalid)
	}
	p, err := l.client.ExecStream(ctx, shim.ExecStreamRequest{
		ExecRequest: protocol.ExecRequest{Args: r.Args, UID: c.User.UID, GID: c.User.GID, AdditionalGids: c.User.AdditionalGids},
		Tty:         r.Tty, Width: r.Width, Height: r.Height,
		Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr,
	})
	if err != nil {
		return nil, shimErr(c.ID, err)
	}
	return p, nil
}

// AttachRequest says which of a container's streams an attachment wants.
type AttachRequest struct {
	Stdin, Stdout, Stderr bool
}

// Attachment is a connection to a running container's standard streams.
// Its files are the caller's; Close closes them.
type Attachment struct {
	// Stdin writes to the container's stdin (its pipe, or its terminal);
	// nil unless asked for and open.
	Stdin *os.File
	// Stdout and Stderr carry the container's output (a tty container has
	// only Stdout, its terminal's output); nil unless asked for.
	Stdout, Stderr *os.File

	shim *shim.Attachment
}

// Resize sets the size of a tty container's terminal.
func (a *Attachment) Resize(width, height uint16) error { return a.shim.Resize(width, height) }

// Close ends the attachment and closes its files.
func (a *Attachment) Close() error { return a.shim.Close() }

// Attach connects to a running container's output, and its stdin when it
// was created with one.
func (m *Manager) Attach(ctx context.Context, id string, r AttachRequest) (*Attachment, error) {
	c, l, err := m.client(id)
	if err != nil {
		return nil, err
	}
	if c.State != Running || l == nil || l.client == nil {
		return nil, fmt.Errorf("%w: container %s is %s", ErrNotRunning, c.ID, stateName(c.State))
	}
	if r.Stdin && !c.config.GetStdin() {
		r.Stdin = false
	}
	a, err := l.client.Attach(ctx, protocol.AttachRequest{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr})
	if err != nil {
		return nil, shimErr(c.ID, err)
	}
	return &Attachment{Stdin: a.Stdin, Stdout: a.Stdout, Stderr: a.Stderr, shim: a}, nil
}
