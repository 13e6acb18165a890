package server

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/shim/protocol"
)

var consoleSeq atomic.Uint64

// consoleSocket is a socket the runtime sends the pty master of a new
// terminal on (--console-socket).
type consoleSocket struct {
	ln *net.UnixListener
}

// newConsoleSocket listens in dir, or in the temporary directory when that
// path is too long for a socket.
func newConsoleSocket(dir string) (*consoleSocket, error) {
	name := "console-" + strconv.FormatUint(consoleSeq.Add(1), 10) + ".sock"
	path := filepath.Join(dir, name)
	if len(path) >= len(unix.RawSockaddrUnix{}.Path) {
		path = filepath.Join(os.TempDir(), "pier-"+strconv.Itoa(os.Getpid())+"-"+name)
	}
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("pier-shim: console socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("pier-shim: console socket: %w", err)
	}
	return &consoleSocket{ln: ln}, nil
}

func (c *consoleSocket) path() string { return c.ln.Addr().String() }

// receive returns the pty master the runtime sent. The runtime sends it
// before it returns, so the connection is waiting already.
func (c *consoleSocket) receive() (int, error) {
	deadline := time.Now().Add(5 * time.Second)
	c.ln.SetDeadline(deadline)
	conn, err := c.ln.AcceptUnix()
	if err != nil {
		return -1, fmt.Errorf("pier-shim: no terminal from the runtime: %w", err)
	}
	defer conn.Close()
	conn.SetReadDeadline(deadline)
	fc := &protocol.FdConn{UnixConn: conn}
	var name [256]byte // the runtime sends the terminal's name with it
	for len(fc.Fds) == 0 {
		if _, err := fc.Read(name[:]); err != nil {
			return -1, fmt.Errorf("pier-shim: no terminal from the runtime: %w", err)
		}
	}
	protocol.CloseFds(fc.Fds[1:])
	return fc.Fds[0], nil
}

// close stops listening and removes the socket.
func (c *consoleSocket) close() { c.ln.Close() }
