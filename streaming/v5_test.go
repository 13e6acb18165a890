package streaming

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// echoRuntime's Exec copies its input, upper-cased, to its output, then
// writes the terminal size it was given (with a TTY, so to its output).
type echoRuntime struct{ *Sessions }

func (echoRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	b, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	if _, err := out.Write([]byte(strings.ToUpper(string(b)))); err != nil {
		return err
	}
	if resize != nil {
		select {
		case size := <-resize:
			fmt.Fprintf(out, "%dx%d", size.Width, size.Height)
		case <-time.After(5 * time.Second):
		}
	}
	return nil
}

func TestV5Exec(t *testing.T) {
	for _, tty := range []bool{false, true} {
		t.Run(fmt.Sprintf("tty=%v", tty), func(t *testing.T) { testV5Exec(t, tty) })
	}
}

func testV5Exec(t *testing.T, tty bool) {
	s, err := NewServer("127.0.0.1:0", echoRuntime{&Sessions{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.lis.Close()
	srv := httptest.NewServer(s)
	defer srv.Close()
	resp, err := s.GetExec(&runtimeapi.ExecRequest{ContainerId: "c", Cmd: []string{"cat"}, Stdin: true, Stdout: true, Stderr: !tty, Tty: tty})
	if err != nil {
		t.Fatal(err)
	}
	url := "ws://" + srv.Listener.Addr().String() + resp.Url[strings.Index(resp.Url[len("http://"):], "/")+len("http://"):]
	d := websocket.Dialer{Subprotocols: []string{v5Protocol}}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if ws.Subprotocol() != v5Protocol {
		t.Fatalf("subprotocol %q", ws.Subprotocol())
	}
	// Input in two messages, one bigger than the buffer, a resize, then
	// the close of standard input.
	big := strings.Repeat("x", 3*v5Buffer+7)
	for _, m := range [][]byte{append([]byte{chanStdin}, "hello "...), append([]byte{chanStdin}, big...), append([]byte{chanResize}, `{"Width":80,"Height":24}`...), {v5Close, chanStdin}} {
		if err := ws.WriteMessage(websocket.BinaryMessage, m); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr strings.Builder
	var status string
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, m, err := ws.ReadMessage()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				t.Fatalf("read: %v", err)
			}
			break
		}
		if len(m) == 0 {
			t.Fatal("an empty message, without its channel")
		}
		switch m[0] {
		case chanStdout:
			stdout.Write(m[1:])
		case chanStderr:
			stderr.Write(m[1:])
		case chanError:
			status += string(m[1:])
		default:
			t.Fatalf("message on channel %d", m[0])
		}
	}
	// With a TTY the process gets the size; without, no resize reaches it.
	want := "HELLO " + strings.ToUpper(big) + map[bool]string{true: "80x24"}[tty]
	if got := stdout.String(); got != want {
		t.Fatalf("stdout: %d bytes ending %q, want %d ending %q", len(got), got[max(0, len(got)-8):], len(want), want[len(want)-8:])
	}
	if stderr.String() != "" {
		t.Fatalf("stderr %q", stderr.String())
	}
	var st streamStatus
	if err := json.Unmarshal([]byte(status), &st); err != nil || st.Status != "Success" {
		t.Fatalf("status %q: %v", status, err)
	}
}
