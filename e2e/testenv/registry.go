// Package testenv provides the end-to-end test environment: a registry on
// loopback with fault injection, and test images built from Debian's busybox.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Auth makes a Registry require Docker token authentication. Any non-empty
// field is a credential the registry accepts:
//   - Username and Password: HTTP Basic on GET /token;
//   - IdentityToken: OAuth2 POST /token with grant_type=refresh_token;
//   - RegistryToken: used directly as the bearer token on /v2/.
type Auth struct {
	Username      string
	Password      string
	IdentityToken string
	RegistryToken string
}

// RegistryOptions configures StartRegistry.
type RegistryOptions struct {
	// Auth, when set, makes everything under /v2/ require a bearer token.
	Auth *Auth
	// BlobDir, when set, keeps the blobs in files there instead of memory
	// (big images).
	BlobDir string
	// Addr, when set, is the address to serve on ("127.0.0.1:PORT"), for
	// a runtime configured with it beforehand; by default a free port of
	// 127.0.0.1.
	Addr string
}

// Registry is an in-memory OCI registry served on 127.0.0.1 with fault
// injection. Its methods are safe for concurrent use.
type Registry struct {
	srv      *http.Server
	addr     string
	registry http.Handler
	auth     *Auth
	token    string // bearer token issued by /token

	mu       sync.Mutex
	corrupt  map[v1.Hash]bool
	drops    map[v1.Hash]*drop
	injected []*Fault
	requests map[string]int // GET requests by URL path
}

// FaultKind is a way a registry misbehaves.
type FaultKind int

const (
	// Stall sends the headers and AfterBytes of the body, then nothing
	// until the client goes away (or the registry closes).
	Stall FaultKind = iota + 1
	// Truncate sends the headers, with the full Content-Length, and
	// AfterBytes of the body, then closes the connection.
	Truncate
	// WrongDigest sends content of the right length that does not match
	// the digest asked for (each byte inverted).
	WrongDigest
	// Status answers with Status (500, 429...) and, if RetryAfter is set,
	// a Retry-After header of that many seconds.
	Status
	// RedirectLoop redirects the request to itself.
	RedirectLoop
)

// Fault makes GET requests whose URL path contains Path misbehave: the
// first Times of them (every one if Times is 0).
type Fault struct {
	Kind       FaultKind
	Path       string // a substring of the URL path, such as a digest or "/manifests/"
	Times      int
	AfterBytes int64         // Stall, Truncate
	Delay      time.Duration // Stall: if set, send the rest after this long
	Status     int           // Status
	RetryAfter int           // Status: seconds
	hits       int
}

// Hits is how many requests the fault has affected.
func (r *Registry) Hits(f *Fault) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return f.hits
}

// AddFault makes the registry misbehave as f says, until ClearFaults. The
// first fault added that matches a request applies.
func (r *Registry) AddFault(f *Fault) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.injected = append(r.injected, f)
}

// ClearFaults ends every fault added with AddFault.
func (r *Registry) ClearFaults() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.injected = nil
}

// fault returns the fault that applies to req, counting it, or nil.
func (r *Registry) fault(req *http.Request) *Fault {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.injected {
		if strings.Contains(req.URL.Path, f.Path) && (f.Times == 0 || f.hits < f.Times) {
			f.hits++
			c := *f
			return &c
		}
	}
	return nil
}

type drop struct {
	afterBytes int64
	times      int
}

// StartRegistry starts a registry on opts.Addr, or a free port of 127.0.0.1.
func StartRegistry(opts RegistryOptions) (*Registry, error) {
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	token := make([]byte, 16)
	if _, err := rand.Read(token); err != nil {
		ln.Close()
		return nil, err
	}
	quiet := log.New(io.Discard, "", 0)
	regOpts := []registry.Option{registry.Logger(quiet)}
	if opts.BlobDir != "" {
		regOpts = append(regOpts, registry.WithBlobHandler(registry.NewDiskBlobHandler(opts.BlobDir)))
	}
	r := &Registry{
		addr:     ln.Addr().String(),
		registry: registry.New(regOpts...),
		auth:     opts.Auth,
		token:    "testenv-" + hex.EncodeToString(token),
		corrupt:  map[v1.Hash]bool{},
		drops:    map[v1.Hash]*drop{},
		requests: map[string]int{},
	}
	r.srv = &http.Server{Handler: r, ErrorLog: quiet}
	go r.srv.Serve(ln) //nolint:errcheck // returns http.ErrServerClosed on Close
	return r, nil
}

// Host returns the registry's address, "127.0.0.1:PORT".
func (r *Registry) Host() string { return r.addr }

// Ref returns the reference of path ("repo/name:tag" or "repo/name@digest")
// in this registry.
func (r *Registry) Ref(path string) string { return r.Host() + "/" + path }

// Close stops the registry and closes its connections.
func (r *Registry) Close() error { return r.srv.Close() }

// CorruptBlob makes every later GET of the blob return bytes of the right
// length but wrong content, with status 200 and a Docker-Content-Digest
// header still claiming digest.
func (r *Registry) CorruptBlob(digest v1.Hash) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.corrupt[digest] = true
}

// DropBlob makes the next times GETs of the blob send the response headers
// and afterBytes bytes of the body (which must be shorter than the blob), then
// close the TCP connection. Later GETs are served normally.
func (r *Registry) DropBlob(digest v1.Hash, afterBytes int64, times int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drops[digest] = &drop{afterBytes: afterBytes, times: times}
}

// Requests returns how many GET requests under /v2/ with a URL path
// containing pathSubstring the registry has accepted (requests refused for
// lack of authentication are not counted). For example
// Requests(digest.Hex) counts the downloads of a blob.
func (r *Registry) Requests(pathSubstring string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for p, c := range r.requests {
		if strings.Contains(p, pathSubstring) {
			n += c
		}
	}
	return n
}

// PushOptions returns the remote options that authenticate to this registry
// with its configured credentials (anonymous without Auth). They suit pulls
// as well as pushes.
func (r *Registry) PushOptions() []remote.Option {
	auth := authn.Anonymous
	switch a := r.auth; {
	case a == nil:
	case a.Username != "":
		auth = authn.FromConfig(authn.AuthConfig{Username: a.Username, Password: a.Password})
	case a.IdentityToken != "":
		auth = authn.FromConfig(authn.AuthConfig{IdentityToken: a.IdentityToken})
	case a.RegistryToken != "":
		auth = authn.FromConfig(authn.AuthConfig{RegistryToken: a.RegistryToken})
	}
	return []remote.Option{remote.WithAuth(auth)}
}

// Push uploads img as path ("repo/name:tag") and returns its digest.
func (r *Registry) Push(path string, img v1.Image) (v1.Hash, error) {
	ref, err := name.ParseReference(r.Ref(path), name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(ref, img, r.PushOptions()...); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return img.Digest()
}

// PushIndex uploads idx and its images as path ("repo/name:tag") and returns
// the index digest.
func (r *Registry) PushIndex(path string, idx v1.ImageIndex) (v1.Hash, error) {
	ref, err := name.ParseReference(r.Ref(path), name.Insecure)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.WriteIndex(ref, idx, r.PushOptions()...); err != nil {
		return v1.Hash{}, fmt.Errorf("push %s: %w", ref, err)
	}
	return idx.Digest()
}

// ServeHTTP implements http.Handler: token endpoint, authentication, request
// counting and fault injection in front of the go-containerregistry handler.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.auth != nil {
		if req.URL.Path == "/token" {
			r.serveToken(w, req)
			return
		}
		if strings.HasPrefix(req.URL.Path, "/v2") && !r.authorized(req) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="testenv"`, r.Host()))
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
	}
	if req.Method == http.MethodGet {
		w = r.faults(w, req)
		if f := r.fault(req); f != nil {
			switch f.Kind {
			case Status:
				if f.RetryAfter > 0 {
					w.Header().Set("Retry-After", fmt.Sprint(f.RetryAfter))
				}
				writeError(w, f.Status, "UNAVAILABLE", "testenv: injected failure")
				return
			case RedirectLoop:
				http.Redirect(w, req, req.URL.String(), http.StatusTemporaryRedirect)
				return
			case Stall:
				w = &faultWriter{ResponseWriter: w, remaining: f.AfterBytes, stall: req.Context().Done(), delay: f.Delay}
			case Truncate:
				w = &faultWriter{ResponseWriter: w, remaining: f.AfterBytes}
			case WrongDigest:
				w = &faultWriter{ResponseWriter: w, corrupt: true, remaining: -1}
			}
		}
	}
	r.registry.ServeHTTP(w, req)
}

// authorized reports whether req carries a bearer token this registry accepts.
func (r *Registry) authorized(req *http.Request) bool {
	tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	return ok && (tok == r.token || (r.auth.RegistryToken != "" && tok == r.auth.RegistryToken))
}

// serveToken is the token endpoint of the Docker token and OAuth2 flows.
func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	a := r.auth
	var resp map[string]string
	switch req.Method {
	case http.MethodGet:
		if user, pass, ok := req.BasicAuth(); ok && a.Username != "" && user == a.Username && pass == a.Password {
			resp = map[string]string{"token": r.token, "access_token": r.token}
		}
	case http.MethodPost:
		if a.IdentityToken != "" && req.PostFormValue("grant_type") == "refresh_token" &&
			req.PostFormValue("refresh_token") == a.IdentityToken {
			resp = map[string]string{"access_token": r.token}
		}
	}
	if resp == nil {
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid credentials")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp) //nolint:errcheck // client gone
}

// writeError writes an error in the registry's JSON error format.
func writeError(w http.ResponseWriter, status int, code, message string) {
	type regError struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string][]regError{"errors": {{code, message}}}) //nolint:errcheck // client gone
}

// faults counts the GET request and wraps w with the faults set for its blob.
func (r *Registry) faults(w http.ResponseWriter, req *http.Request) http.ResponseWriter {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests[req.URL.Path]++
	_, target, ok := strings.Cut(req.URL.Path, "/blobs/")
	if !ok {
		return w
	}
	digest, err := v1.NewHash(target)
	if err != nil {
		return w
	}
	fw := &faultWriter{ResponseWriter: w, corrupt: r.corrupt[digest], remaining: -1}
	if d := r.drops[digest]; d != nil && d.times > 0 {
		d.times--
		fw.remaining = d.afterBytes
	}
	if !fw.corrupt && fw.remaining < 0 {
		return w
	}
	return fw
}

var errDropped = errors.New("testenv: connection dropped")

// faultWriter corrupts the body it writes and/or drops the connection after
// a number of body bytes.
type faultWriter struct {
	http.ResponseWriter
	corrupt   bool
	remaining int64           // body bytes to send before dropping; -1: never drop
	stall     <-chan struct{} // if set, wait for it instead of dropping
	delay     time.Duration   // with stall: if set, go on after this long
}

func (f *faultWriter) Write(p []byte) (int, error) {
	if f.corrupt {
		// p may alias the registry's stored blob: invert a copy.
		q := make([]byte, len(p))
		for i, b := range p {
			q[i] = ^b
		}
		p = q
	}
	if f.remaining < 0 || int64(len(p)) <= f.remaining {
		n, err := f.ResponseWriter.Write(p)
		if f.remaining >= 0 {
			f.remaining -= int64(n)
		}
		return n, err
	}
	n, _ := f.ResponseWriter.Write(p[:f.remaining])
	f.remaining = 0
	rc := http.NewResponseController(f.ResponseWriter)
	rc.Flush() //nolint:errcheck // the connection is closed anyway
	if f.stall != nil && f.delay > 0 {
		select {
		case <-time.After(f.delay):
			f.remaining = -1
			m, err := f.ResponseWriter.Write(p[n:])
			return n + m, err
		case <-f.stall:
		}
	} else if f.stall != nil {
		<-f.stall
	}
	if conn, _, err := rc.Hijack(); err == nil {
		conn.Close()
	}
	return n, errDropped
}
