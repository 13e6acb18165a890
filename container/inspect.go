package container

import (
	"context"
	"os"
	"path/filepath"

	"github.com/pier-runtime/pier/shim/protocol"
)

// InitPid is the host pid of the container's init process, as its shim
// reports it (the shim's monitor is the init's parent, so the pid is the
// init's until the shim reports the exit), or 0 when there is none: the
// container is not created or has exited, its shim is not connected, or
// does not answer before ctx is done.
func (m *Manager) InitPid(ctx context.Context, id string) int {
	c, l, err := m.client(id)
	if err != nil || l == nil || (c.State != Created && c.State != Running) {
		return 0
	}
	select {
	case <-l.ready:
	default:
		return 0 // the runtime's create runs
	}
	if l.err != nil || l.client == nil {
		return 0
	}
	st, err := l.client.State(ctx)
	if err != nil || st.Status == protocol.StatusExited {
		return 0
	}
	return st.Pid
}

// Spec is the container's OCI spec as the runtime got it, its bundle's
// config.json; an error when the bundle is gone (the node rebooted).
func (m *Manager) Spec(id string) ([]byte, error) {
	c, err := m.Get(id)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(m.SpecPath(c))
}

// SpecPath is where the container's OCI spec is, its bundle's config.json.
func (m *Manager) SpecPath(c *Container) string {
	return filepath.Join(m.bundle(c.ID), "config.json")
}
