package streaming

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
)

// The v5 channel protocol (v5.channel.k8s.io): each binary message is one
// channel's; its first byte is the channel, the rest its data. A message
// of two bytes, v5Close and a channel, ends that channel's input.
const (
	chanStdin byte = iota
	chanStdout
	chanStderr
	chanError
	chanResize
	v5Channels

	v5Close byte = 255

	// v5Buffer is the size of the connection's read and write buffers, and
	// of the buffer a message's data is copied through: a client sends its
	// input in messages of up to 32 KiB.
	v5Buffer = 32 << 10
	// maxResizeMessage bounds a resize message (JSON of two numbers).
	maxResizeMessage = 4 << 10
)

// v5Session is one exec or attach over the v5 protocol, on gorilla's
// WebSocket: a message's data is streamed through one reused buffer into
// its channel (the k8s.io/streaming implementation allocated each message
// whole, and cost twice the CPU of SPDY per byte). Input ends with the
// client's close of channel 0 or of the connection; the idle timeout is
// reset by every message either way.
type v5Session struct {
	ws      *websocket.Conn
	timeout time.Duration

	stdin  *io.PipeReader // nil without stdin
	stdinW *io.PipeWriter
	resize chan remotecommandserver.TerminalSize // nil without a TTY

	wmu sync.Mutex // one message written at a time
}

// openV5 upgrades the request to a v5 session; the caller closes it.
func openV5(w http.ResponseWriter, r *http.Request, stdin, tty bool, timeout time.Duration) (*v5Session, error) {
	up := websocket.Upgrader{
		Subprotocols:    []string{v5Protocol},
		ReadBufferSize:  v5Buffer,
		WriteBufferSize: v5Buffer,
		// The client is whoever got the URL from the CRI socket.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return nil, err
	}
	s := &v5Session{ws: ws, timeout: timeout}
	if stdin {
		s.stdin, s.stdinW = io.Pipe()
	}
	if tty {
		s.resize = make(chan remotecommandserver.TerminalSize, 1)
	}
	s.alive()
	return s, nil
}

// alive pushes the idle deadline back.
func (s *v5Session) alive() {
	if s.timeout > 0 {
		s.ws.UnderlyingConn().SetDeadline(time.Now().Add(s.timeout))
	}
}

// receive reads the client's messages until the connection ends, feeding
// standard input and terminal sizes; it then ends both.
func (s *v5Session) receive() {
	if s.stdinW != nil {
		defer s.stdinW.Close()
	}
	if s.resize != nil {
		defer close(s.resize)
	}
	buf := make([]byte, v5Buffer)
	for {
		t, r, err := s.ws.NextReader()
		if err != nil {
			if !websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
				klog.V(4).InfoS("WebSocket session's input ended", "err", err)
			}
			return
		}
		s.alive()
		if t != websocket.BinaryMessage {
			continue
		}
		var ch [1]byte
		if _, err := io.ReadFull(r, ch[:]); err != nil {
			continue // an empty message
		}
		switch ch[0] {
		case v5Close:
			if _, err := io.ReadFull(r, ch[:]); err == nil && ch[0] == chanStdin && s.stdinW != nil {
				s.stdinW.Close()
			}
		case chanStdin:
			if s.stdinW != nil {
				if _, err := io.CopyBuffer(s.stdinW, r, buf); err != nil && !errors.Is(err, io.ErrClosedPipe) {
					klog.V(4).InfoS("WebSocket session's input", "err", err)
				}
			}
		case chanResize:
			s.readResize(r)
		}
		// Whatever is left of the message (a channel that takes no
		// input) is skipped by the next NextReader.
	}
}

// readResize decodes one terminal size and hands it on; only the newest
// size matters, so an older one not yet taken is dropped.
func (s *v5Session) readResize(r io.Reader) {
	if s.resize == nil {
		return
	}
	var size remotecommandserver.TerminalSize
	if json.NewDecoder(io.LimitReader(r, maxResizeMessage)).Decode(&size) != nil {
		return
	}
	select {
	case s.resize <- size:
	default:
		select {
		case <-s.resize:
		default:
		}
		s.resize <- size
	}
}

// write sends data as one message of channel ch.
func (s *v5Session) write(ch byte, data []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.alive()
	w, err := s.ws.NextWriter(websocket.BinaryMessage)
	if err != nil {
		return err
	}
	if _, err := w.Write([]byte{ch}); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	return w.Close()
}

// writer is channel ch's output stream.
func (s *v5Session) writer(ch byte) io.WriteCloser { return v5Writer{s, ch} }

type v5Writer struct {
	s  *v5Session
	ch byte
}

func (w v5Writer) Write(p []byte) (int, error) {
	if err := w.s.write(w.ch, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w v5Writer) Close() error { return nil }

// close says goodbye and closes the connection: the client waits for the
// server's close once it has the result.
func (s *v5Session) close() {
	s.wmu.Lock()
	s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	s.wmu.Unlock()
	s.ws.Close()
	if s.stdin != nil {
		s.stdin.Close()
	}
}
