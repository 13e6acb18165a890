package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/oci"
)

// The fuzz targets decode what pierd, pier-shim and the monitor read from
// each other. Their seeds are in testdata/fuzz; make fuzz-go runs them.

// roundTrip checks that what decoded from data encodes to a canonical form
// that decodes to itself: nothing decoded is lost or changed on the way
// back (encoding/json's normalisation aside, which the canonical form has
// already undergone).
func roundTrip[T any](t *testing.T, v *T) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		// Only what cannot be written at all (a time past year 9999):
		// nothing pier writes.
		t.Skipf("not encodable: %v", err)
	}
	var again T
	if err := json.Unmarshal(b, &again); err != nil {
		t.Fatalf("%s does not decode: %v", b, err)
	}
	b2, err := json.Marshal(&again)
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("round trip changed the message:\n%s\n%s (%v)", b, b2, err)
	}
	return b
}

var vAndOp = regexp.MustCompile(`^\{"v":-?[0-9]+,"op":"`)

// FuzzRequest: a control request line, as the shim server decodes it. The
// monitor learns the operation from the start of a long line: "v" and
// "op" come first in every request pierd writes.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"op":"hello"}`,
		`{"v":1,"op":"exec","exec":{"args":["sh","-c","echo hi"],"env":["A=b"],"cwd":"/","uid":1000,"gid":1000,"additionalGids":[1,2],"timeout":1000000000}}`,
		`{"v":1,"op":"exec-stream","exec":{"args":["sh"]},"tty":true,"width":80,"height":24,"fds":["stdin","stdout"]}`,
		`{"v":1,"op":"attach","attach":{"stdin":true,"stdout":true,"stderr":true},"fds":["stdin"]}`,
		`{"v":2,"op":"delete"}`,
		`{"op":"wait","v":1,"exec":null}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req Request
		if json.Unmarshal(data, &req) != nil {
			return
		}
		if b := roundTrip(t, &req); !vAndOp.Match(b) {
			t.Fatalf("the request does not start with v and op: %s", b)
		}
	})
}

// FuzzResponse: an answer, as pierd decodes it, and the error it makes of
// one: a code pierd knows maps back to the same code.
func FuzzResponse(f *testing.F) {
	for _, s := range []string{
		`{"v":1,"pid":42}`,
		`{"v":1,"state":{"status":"exited","pid":7,"shimPid":6,"createdAt":"2024-01-02T03:04:05Z","startedAt":"2024-01-02T03:04:06.5+02:00","exit":{"code":137,"signal":9,"oomKilled":true,"finishedAt":"2024-01-02T03:04:07Z"}}}`,
		`{"v":1,"exit":{"code":3,"finishedAt":"2024-01-02T03:04:07Z"}}`,
		`{"v":1,"exec":{"exitCode":0,"stdout":"aGkK","stderr":"","timedOut":true}}`,
		`{"v":1,"error":"pier-shim: the container has exited: container is not running","code":"not_running"}`,
		`{"v":1,"error":"no such container","code":"not_found"}`,
		`{"v":1,"error":"v2?","code":"version"}`,
		`{"v":1,"error":"other","code":"what"}`,
		`{"v":1,"pid":9,"fds":["pty"]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var resp Response
		if json.Unmarshal(data, &resp) != nil {
			return
		}
		roundTrip(t, &resp)
		if resp.Error == "" {
			return
		}
		err := &RemoteError{Msg: resp.Error, Code: resp.Code}
		back := ErrorResponse(err)
		known := resp.Code == CodeNotFound || resp.Code == CodeNotRunning || resp.Code == CodeVersion
		if back.Error != resp.Error || known && back.Code != resp.Code || !known && back.Code != "" {
			t.Fatalf("error %q code %q comes back as %q code %q", resp.Error, resp.Code, back.Error, back.Code)
		}
		for _, sentinel := range []error{oci.ErrNotFound, ErrNotRunning, ErrVersion} {
			if errors.Is(err, sentinel) != (ErrorResponse(sentinel).Code == resp.Code) {
				t.Fatalf("code %q: errors.Is(%v) = %v", resp.Code, sentinel, errors.Is(err, sentinel))
			}
		}
	})
}

// FuzzHandshake: the line a new shim writes on its pipe, as pierd decodes it.
func FuzzHandshake(f *testing.F) {
	f.Add([]byte(`{"v":1,"pid":1234}` + "\n"))
	f.Add([]byte(`{"v":1,"error":"runc create failed: exec: \"nosuch\": executable file not found in $PATH"}`))
	f.Add([]byte(`{"v":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var hs Handshake
		if json.Unmarshal(data, &hs) == nil {
			roundTrip(t, &hs)
		}
	})
}

// FuzzReadConfig: shim.json, as pier-shim reads it. What it accepts is of
// this version, has Dir set to where it was read, and survives the trip.
func FuzzReadConfig(f *testing.F) {
	f.Add([]byte(`{"v":1,"id":"abc","bundle":"/run/pier/bundles/abc","runtime":{"Name":"runc","Path":"runc","Root":"/run/pier/runtime/runc","SystemdCgroup":true},"dir":"/x","socket":"/run/pier/s/abc.sock","logPath":"/var/log/pods/p/c/0.log","logDir":"/var/log/pods/p","tty":true,"stdin":true,"stdinOnce":true}`))
	f.Add([]byte(`{"v":2,"id":"abc"}`))
	f.Add([]byte(`{"v":1,"runtime":null,"tty":"yes"}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, ConfigFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := ReadConfig(dir)
		if err != nil {
			if cfg != nil {
				t.Fatalf("a config with the error %v", err)
			}
			return
		}
		if cfg.Version != Version || cfg.Dir != dir {
			t.Fatalf("accepted version %d, dir %q", cfg.Version, cfg.Dir)
		}
		b := roundTrip(t, cfg)
		if err := os.WriteFile(filepath.Join(dir, ConfigFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := ReadConfig(dir)
		if err != nil {
			t.Fatalf("%s, written back, does not read: %v", b, err)
		}
		if b2, _ := json.Marshal(again); !bytes.Equal(b, b2) {
			t.Fatalf("written back and read, %s becomes %s", b, b2)
		}
	})
}

// FuzzReadExit: exit.json, as pierd reads what a monitor left.
func FuzzReadExit(f *testing.F) {
	f.Add([]byte(`{"v":1,"code":137,"signal":9,"oomKilled":true,"finishedAt":"2024-01-02T03:04:05.123456789Z"}` + "\n"))
	f.Add([]byte(`{"v":1,"code":0,"finishedAt":"2024-01-02T03:04:05+01:00"}`))
	f.Add([]byte(`{"v":2,"code":0}`))
	f.Add([]byte(`{"v":1,"code":-1,"finishedAt":"0001-01-01T00:00:00Z"}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, ExitFile), data, 0o600); err != nil {
			t.Fatal(err)
		}
		e, err := ReadExit(dir)
		if err != nil {
			if e != nil {
				t.Fatalf("an exit with the error %v", err)
			}
			return
		}
		b := roundTrip(t, &ExitRecord{V: Version, Exit: *e})
		if err := os.WriteFile(filepath.Join(dir, ExitFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := ReadExit(dir)
		if err != nil {
			t.Fatalf("%s, written back, does not read: %v", b, err)
		}
		if b2, _ := json.Marshal(&ExitRecord{V: Version, Exit: *again}); !bytes.Equal(b, b2) {
			t.Fatalf("written back and read, %s becomes %s", b, b2)
		}
	})
}

// FuzzFdConn: a message with file descriptors, as the client of an
// attachment reads it (FdConn, then Files by the names the message
// gives): every descriptor received ends up either in a file returned or
// closed, whatever the message says.
func FuzzFdConn(f *testing.F) {
	f.Add([]byte(`{"v":1,"fds":["stdin","stdout","stderr"]}`), uint8(3))
	f.Add([]byte(`{"v":1,"fds":["pty"]}`), uint8(2))
	f.Add([]byte(`{"v":1,"fds":["stdin","stdin"]}`), uint8(2))
	f.Add([]byte(`{"v":1}`), uint8(4))
	f.Add([]byte(`{"v":1,"fds":["stdout"]}`), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, nfds uint8) {
		if len(data) > 32<<10 {
			return // within the socket's buffer: the sender does not block
		}
		before := openFds(t)
		pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Up to twice MaxFds: the kernel drops what the reader has no room for.
		send := make([]int, int(nfds)%(2*MaxFds+1))
		for i := range send {
			if send[i], err = unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
				t.Fatal(err)
			}
		}
		var oob []byte
		if len(send) > 0 {
			oob = unix.UnixRights(send...)
		}
		err = unix.Sendmsg(pair[0], append(append([]byte{}, data...), '\n'), oob, nil, 0)
		CloseFds(send)
		unix.Close(pair[0])
		if err != nil {
			t.Fatal(err)
		}
		file := os.NewFile(uintptr(pair[1]), "conn")
		c, err := net.FileConn(file)
		file.Close()
		if err != nil {
			t.Fatal(err)
		}
		fc := &FdConn{UnixConn: c.(*net.UnixConn)}
		var resp Response
		derr := json.NewDecoder(fc).Decode(&resp)
		files, ferr := fc.Files(resp.Fds, false)
		if derr == nil && ferr == nil && len(resp.Fds) > 0 && len(files) == 0 {
			t.Fatalf("named %q, got no files", resp.Fds)
		}
		for _, f := range files {
			f.Close()
		}
		if len(fc.Fds) != 0 {
			t.Fatalf("Files left %d descriptors in the connection", len(fc.Fds))
		}
		c.Close()
		if after := openFds(t); after != before {
			t.Fatalf("%d descriptors open before, %d after (sent %d, named %q)", before, after, len(send), resp.Fds)
		}
	})
}

func openFds(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}
