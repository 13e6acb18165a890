package protocol

import (
	"encoding/json"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// File descriptors travel with a message on the control socket
// (SCM_RIGHTS); the message's "fds" field names them in order.

// Names of the descriptors passed with a message.
const (
	FdPty    = "pty"
	FdStdin  = "stdin"
	FdStdout = "stdout"
	FdStderr = "stderr"
)

// MaxFds is the most file descriptors one message carries; the kernel
// closes any beyond.
const MaxFds = 4

// FdConn reads a unix connection and keeps the file descriptors that come
// with its data (close-on-exec).
type FdConn struct {
	*net.UnixConn
	Fds []int
	oob [64]byte // room for MaxFds
}

func (c *FdConn) Read(p []byte) (int, error) {
	n, oobn, _, _, err := c.ReadMsgUnix(p, c.oob[:unix.CmsgSpace(MaxFds*4)])
	// On an error other than EAGAIN (ECONNRESET: the peer ended with data
	// of ours unread), the runtime passes recvmsg's -1 on; a reader
	// (json.Decoder) would slice with it.
	n = max(n, 0)
	if oobn > 0 {
		msgs, perr := unix.ParseSocketControlMessage(c.oob[:oobn])
		if perr == nil {
			for i := range msgs {
				if fds, err := unix.ParseUnixRights(&msgs[i]); err == nil {
					c.Fds = append(c.Fds, fds...)
				}
			}
		}
	}
	return n, err
}

// Files takes the file descriptors received so far, by the names of the
// message's "fds" field. Descriptors left unnamed are closed.
func (c *FdConn) Files(names []string, nonblock bool) (map[string]*os.File, error) {
	fds := c.Fds
	c.Fds = nil
	if len(fds) != len(names) {
		CloseFds(fds)
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

// WriteMsg writes v as one line of JSON on conn, passing fds with it.
func WriteMsg(conn *net.UnixConn, v any, fds []int) error {
	if len(fds) > MaxFds {
		return fmt.Errorf("%d file descriptors in one message, at most %d", len(fds), MaxFds)
	}
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

// CloseFds closes descriptors; -1 is none.
func CloseFds(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
