package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// File descriptors travel with a message on the control socket
// (SCM_RIGHTS); the message's "fds" field names them in order.

// maxFds is the most file descriptors one message carries; the kernel
// closes any beyond.
const maxFds = 4

// fdConn reads a unix connection and keeps the file descriptors that come
// with its data (close-on-exec).
type fdConn struct {
	*net.UnixConn
	fds []int
	oob [64]byte // room for maxFds
}

func (c *fdConn) Read(p []byte) (int, error) {
	n, oobn, _, _, err := c.ReadMsgUnix(p, c.oob[:unix.CmsgSpace(maxFds*4)])
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(c.oob[:oobn])
		if perr == nil {
			for i := range msgs {
				if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
					c.fds = append(c.fds, fds...)
				}
			}
		}
	}
	return n, err
}

// files takes the file descriptors received so far, by the names of the
// message's "fds" field. Descriptors left unnamed are closed.
func (c *fdConn) files(names []string, nonblock bool) (map[string]*os.File, error) {
	fds := c.fds
	c.fds = nil
	if len(fds) != len(names) {
		closeFds(fds)
		if len(names) == 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("got %d file descriptors for %q", len(fds), names)
	}
	m := make(map[string]*os.File, len(fds))
	for i, fd := range fds {
		if nonblock {
			// The caller's poller serves it (reads interrupted by Close).
			unix.SetNonblock(fd, true)
		}
		if old := m[names[i]]; old != nil {
			old.Close()
		}
		m[names[i]] = os.NewFile(uintptr(fd), names[i])
	}
	return m, nil
}

// writeMsg writes v as one line of JSON on conn, passing fds with it.
func writeMsg(conn *net.UnixConn, v any, fds []int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, _, err := conn.WriteMsgUnix(b, oob, nil)
	if err == nil && n < len(b) {
		_, err = conn.Write(b[n:])
	}
	return err
}

func closeFds(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// setWinsize sets the size of the terminal whose pty master is f.
func setWinsize(f *os.File, width, height uint16) error {
	if f == nil {
		return errors.New("not a terminal")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	cerr := rc.Control(func(fd uintptr) {
		err = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: height, Col: width})
	})
	if cerr != nil {
		return cerr
	}
	return err
}

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
	fc := &fdConn{UnixConn: conn}
	var name [256]byte // the runtime sends the terminal's name with it
	for len(fc.fds) == 0 {
		if _, err := fc.Read(name[:]); err != nil {
			return -1, fmt.Errorf("pier-shim: no terminal from the runtime: %w", err)
		}
	}
	closeFds(fc.fds[1:])
	return fc.fds[0], nil
}

// close stops listening and removes the socket.
func (c *consoleSocket) close() { c.ln.Close() }
