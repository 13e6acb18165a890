package protocol

import (
	"encoding/json"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFdConnReset: a peer that ends with data of ours unread resets the
// connection (ECONNRESET). Read must say so with a count of 0: the runtime
// passes recvmsg's -1 on, and a json.Decoder reading the connection
// panicked slicing with it (an exec helper that ended so, seen with crun).
func TestFdConnReset(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "ours")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Data for the peer, which it never reads, then its end.
	if _, err := c.Write([]byte("unread\n")); err != nil {
		t.Fatal(err)
	}
	unix.Close(fds[1])
	conn := &FdConn{UnixConn: c.(*net.UnixConn)}
	n, err := conn.Read(make([]byte, 16))
	if err == nil || n != 0 {
		t.Fatalf("read of a reset connection: %d bytes, %v; want 0 and an error", n, err)
	}
	// What pierd does with it: decode an answer.
	var v map[string]any
	if err := json.NewDecoder(conn).Decode(&v); err == nil {
		t.Fatal("decoded an answer from a reset connection")
	}
}
