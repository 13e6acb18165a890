package container

import (
	"context"
	"fmt"

	"github.com/pier-runtime/pier/shim"
)

// ExecStream starts an interactive process in a running container, as the
// container's user; its stdio are the files in r (or a pty, with Tty).
func (m *Manager) ExecStream(ctx context.Context, id string, r shim.ExecStreamRequest) (*shim.Process, error) {
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
	r.UID, r.GID, r.AdditionalGids = c.User.UID, c.User.GID, c.User.AdditionalGids
	return l.client.ExecStream(ctx, r)
}

// Attach connects to a running container's output, and its stdin when it
// was created with one.
func (m *Manager) Attach(ctx context.Context, id string, r shim.AttachRequest) (*shim.Attachment, error) {
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
	return l.client.Attach(ctx, r)
}
