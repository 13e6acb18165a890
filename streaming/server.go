package streaming

import (
	"bufio"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	cristreaming "k8s.io/cri-streaming/pkg/streaming"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	"k8s.io/streaming/pkg/httpstream"
	"k8s.io/streaming/pkg/httpstream/wsstream"
	utilexec "k8s.io/utils/exec"
)

// Server is pier's streaming server: k8s.io/cri-streaming's server,
// plus the two WebSocket variants that kubectl and client-go use today and
// that library lacks:
//
//   - exec and attach over the v5 channel protocol, whose CLOSE signal ends
//     a stream's input (without it an attach with stdin never ends);
//   - port-forward as SPDY tunnelled through a WebSocket, each binary
//     message carrying the SPDY connection's bytes.
//
// Every URL is single-use whatever the protocol: a request must find its
// token here, and cri-streaming's own cache then also consumes it.
type Server struct {
	cristreaming.Server
	rt      cristreaming.Runtime
	cfg     cristreaming.Config
	lis     net.Listener
	httpSrv *http.Server

	mu      sync.Mutex
	pending map[string]*list.Element // token → *pendingStream, oldest first in order
	order   list.List
}

// pendingStream is an Exec, Attach or PortForward request whose URL has not
// been used yet.
type pendingStream struct {
	token   string
	req     any // *runtimeapi.ExecRequest, *AttachRequest or *PortForwardRequest
	expires time.Time
}

const (
	// tokenTTL and maxPending match cri-streaming's request cache.
	tokenTTL   = time.Minute
	maxPending = 1000

	v5Protocol = remotecommandserver.StreamProtocolV5Name
	// spdyTunnelPrefix prefixes the SPDY subprotocols a client tunnels
	// through a WebSocket ("SPDY/3.1+portforward.k8s.io").
	spdyTunnelPrefix = "SPDY/3.1+"
)

// NewServer listens on addr (port 0: a free port, which the URLs name)
// and returns the server, not serving yet: see Serve.
func NewServer(addr string, rt cristreaming.Runtime) (*Server, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	cfg := cristreaming.DefaultConfig
	cfg.Addr = lis.Addr().String()
	cfg.BaseURL = &url.URL{Scheme: "http", Host: cfg.Addr}
	srv, err := cristreaming.NewServer(cfg, rt)
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	s := &Server{Server: srv, rt: rt, cfg: cfg, lis: lis, pending: make(map[string]*list.Element)}
	s.httpSrv = &http.Server{Handler: s, ReadHeaderTimeout: time.Minute}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Serve serves until Stop.
func (s *Server) Serve() error {
	err := s.httpSrv.Serve(s.lis)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Start serves until Stop, as cri-streaming's Server.Start does (stayUp
// must be true), but through ServeHTTP.
func (s *Server) Start(stayUp bool) error {
	if !stayUp {
		return errors.New("streaming server: stayUp=false is not supported")
	}
	return s.Serve()
}

// Stop closes the listener and every connection.
func (s *Server) Stop() error { return s.httpSrv.Close() }

// GetExec returns the URL of an exec session.
func (s *Server) GetExec(req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	resp, err := s.Server.GetExec(req)
	if err == nil {
		s.remember(resp.GetUrl(), req)
	}
	return resp, err
}

// GetAttach returns the URL of an attach session.
func (s *Server) GetAttach(req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	resp, err := s.Server.GetAttach(req)
	if err == nil {
		s.remember(resp.GetUrl(), req)
	}
	return resp, err
}

// GetPortForward returns the URL of a port-forward session.
func (s *Server) GetPortForward(req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	resp, err := s.Server.GetPortForward(req)
	if err == nil {
		s.remember(resp.GetUrl(), req)
	}
	return resp, err
}

func (s *Server) remember(rawURL string, req any) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return
	}
	token := path.Base(u.Path)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(time.Now())
	if s.order.Len() >= maxPending {
		s.drop(s.order.Front())
	}
	s.pending[token] = s.order.PushBack(&pendingStream{token: token, req: req, expires: time.Now().Add(tokenTTL)})
}

// consume returns and forgets the request a token stands for.
func (s *Server) consume(token string) (any, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(time.Now())
	e, ok := s.pending[token]
	if !ok {
		return nil, false
	}
	s.drop(e)
	return e.Value.(*pendingStream).req, true
}

// expire drops the tokens that expired by now. The caller holds mu.
func (s *Server) expire(now time.Time) {
	for e := s.order.Front(); e != nil && now.After(e.Value.(*pendingStream).expires); e = s.order.Front() {
		s.drop(e)
	}
}

func (s *Server) drop(e *list.Element) {
	delete(s.pending, e.Value.(*pendingStream).token)
	s.order.Remove(e)
}

// ServeHTTP serves a session: the variants cri-streaming lacks here, the
// rest through it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	kind, token := path.Split(r.URL.Path)
	req, ok := s.consume(token)
	if !ok {
		http.Error(w, "streaming URL not found: it was used already, or it expired (URLs are valid once, for a minute); ask for a new one", http.StatusNotFound)
		return
	}
	switch kind = path.Base(kind); {
	case kind == "exec" && wsstream.IsWebSocketRequestWithStreamCloseProtocol(r):
		if exec, ok := req.(*runtimeapi.ExecRequest); ok {
			s.serveV5(w, r, exec.GetContainerId(), exec.GetCmd(), exec.GetStdin(), exec.GetStdout(), exec.GetStderr(), exec.GetTty())
			return
		}
	case kind == "attach" && wsstream.IsWebSocketRequestWithStreamCloseProtocol(r):
		if att, ok := req.(*runtimeapi.AttachRequest); ok {
			s.serveV5(w, r, att.GetContainerId(), nil, att.GetStdin(), att.GetStdout(), att.GetStderr(), att.GetTty())
			return
		}
	case kind == "portforward" && wsstream.IsWebSocketRequestWithTunnelingProtocol(r):
		s.serveTunnel(w, r)
		return
	}
	s.Server.ServeHTTP(w, r)
}

// serveV5 runs an exec (cmd set) or an attach (cmd nil) over the v5
// WebSocket channel protocol (v5.go): channels stdin, stdout, stderr,
// error (the result, as a Kubernetes Status in JSON) and resize.
func (s *Server) serveV5(w http.ResponseWriter, r *http.Request, id string, cmd []string, stdin, stdout, stderr, tty bool) {
	sess, err := openV5(w, r, stdin, tty, s.cfg.StreamIdleTimeout)
	if err != nil {
		klog.V(2).InfoS("WebSocket upgrade failed", "container", id, "err", err)
		return
	}
	defer sess.close()
	// An empty message on the first output channel tells the client the
	// session is up.
	switch {
	case stdout:
		sess.write(chanStdout, nil)
	case stderr:
		sess.write(chanStderr, nil)
	default:
		sess.write(chanError, nil)
	}

	// The input ends when the connection does: the client is gone.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		defer cancel()
		sess.receive()
	}()

	var in io.Reader
	var out, errw io.WriteCloser
	if stdin {
		in = sess.stdin
	}
	if stdout {
		out = sess.writer(chanStdout)
	}
	if stderr {
		errw = sess.writer(chanStderr)
	}
	if cmd != nil {
		err = s.rt.Exec(ctx, id, cmd, in, out, errw, tty, sess.resize)
	} else {
		err = s.rt.Attach(ctx, id, in, out, errw, tty, sess.resize)
	}
	b, _ := json.Marshal(execStatus(err))
	if werr := sess.write(chanError, b); werr != nil {
		klog.V(4).InfoS("Could not send the session's status", "container", id, "err", werr)
	}
}

// streamStatus is the Kubernetes Status (metav1.Status on the wire) that ends a
// v4 or v5 session on its error channel.
type streamStatus struct {
	Metadata struct{}       `json:"metadata"`
	Status   string         `json:"status"`
	Message  string         `json:"message,omitempty"`
	Reason   string         `json:"reason,omitempty"`
	Details  *statusDetails `json:"details,omitempty"`
	Code     int            `json:"code,omitempty"`
}

type statusDetails struct {
	Causes []statusCause `json:"causes"`
}

type statusCause struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// execStatus is the status of a session that ended with err.
func execStatus(err error) streamStatus {
	var st streamStatus
	var exit utilexec.ExitError
	switch {
	case err == nil:
		st.Status = "Success"
	case errors.As(err, &exit) && exit.Exited():
		st.Status = "Failure"
		st.Reason = remotecommandserver.NonZeroExitCodeReason
		st.Message = fmt.Sprintf("command terminated with non-zero exit code: %v", err)
		st.Details = &statusDetails{Causes: []statusCause{{Reason: remotecommandserver.ExitCodeCauseType, Message: fmt.Sprint(exit.ExitStatus())}}}
	default:
		st.Status = "Failure"
		st.Reason = "InternalError"
		st.Message = fmt.Sprintf("Internal error occurred: %v", err)
		st.Code = http.StatusInternalServerError
	}
	return st
}

// serveTunnel serves a port-forward whose SPDY connection is tunnelled
// through a WebSocket. The request goes on to cri-streaming as the SPDY
// upgrade it stands for; its "101 Switching Protocols" upgrades the
// client's WebSocket instead, and its hijack gets the tunnel.
func (s *Server) serveTunnel(w http.ResponseWriter, r *http.Request) {
	spdyReq := r.Clone(r.Context())
	spdyReq.Header = r.Header.Clone()
	for _, h := range []string{"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions", "Sec-Websocket-Protocol"} {
		spdyReq.Header.Del(h)
	}
	spdyReq.Header.Set(httpstream.HeaderConnection, httpstream.HeaderUpgrade)
	spdyReq.Header.Set(httpstream.HeaderUpgrade, "SPDY/3.1")
	for _, p := range websocket.Subprotocols(r) {
		if sp, ok := strings.CutPrefix(p, spdyTunnelPrefix); ok {
			spdyReq.Header.Add(httpstream.HeaderProtocolVersion, sp)
		}
	}
	s.Server.ServeHTTP(&tunnelWriter{w: w, r: r, header: make(http.Header)}, spdyReq)
}

// tunnelWriter is the http.ResponseWriter cri-streaming's SPDY upgrade
// writes to: the answer itself when it refuses, else a WebSocket upgrade.
type tunnelWriter struct {
	w      http.ResponseWriter
	r      *http.Request
	header http.Header
	conn   net.Conn // the tunnel, after the upgrade
	err    error
}

func (t *tunnelWriter) Header() http.Header { return t.header }

func (t *tunnelWriter) WriteHeader(code int) {
	if code != http.StatusSwitchingProtocols {
		for k, v := range t.header {
			t.w.Header()[k] = v
		}
		t.w.WriteHeader(code)
		return
	}
	up := websocket.Upgrader{
		Subprotocols: []string{spdyTunnelPrefix + t.header.Get(httpstream.HeaderProtocolVersion)},
		// The client is whoever got the URL from the CRI socket.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	ws, err := up.Upgrade(t.w, t.r, nil)
	if err != nil {
		t.err = err
		return
	}
	t.conn = &wsConn{Conn: ws}
}

func (t *tunnelWriter) Write(b []byte) (int, error) {
	if t.conn != nil || t.err != nil {
		return 0, http.ErrHijacked
	}
	return t.w.Write(b)
}

func (t *tunnelWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if t.conn == nil {
		if t.err == nil {
			t.err = errors.New("hijack before the upgrade")
		}
		return nil, nil, fmt.Errorf("WebSocket upgrade: %w", t.err)
	}
	return t.conn, bufio.NewReadWriter(bufio.NewReader(t.conn), bufio.NewWriter(t.conn)), nil
}

// wsConn is a net.Conn whose bytes travel in a WebSocket's binary messages.
type wsConn struct {
	*websocket.Conn
	r   io.Reader // the message being read
	wmu sync.Mutex
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			t, r, err := c.NextReader()
			if err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway) {
					return 0, io.EOF
				}
				return 0, err
			}
			if t != websocket.BinaryMessage {
				continue
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *wsConn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

func (c *wsConn) Close() error {
	c.wmu.Lock()
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	return c.Conn.Close()
}
