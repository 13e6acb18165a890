package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds on what a registry can make pierd hold in memory. Manifests,
// indexes and configs are read whole, so each is capped, both by the size
// its descriptor declares and by the bytes actually received (a registry's
// Content-Length is not trusted). Real ones are a few KiB; containerd and
// CRI-O cap them at a few MiB too. Layers are streamed, never buffered.
const (
	// MaxManifestBytes caps a manifest or an index.
	MaxManifestBytes = 4 << 20
	// MaxConfigBytes caps an image config.
	MaxConfigBytes = 8 << 20
)

const (
	// DefaultPullProgressTimeout is how long a pull may receive no bytes
	// from a registry before it is cancelled (containerd's
	// image_pull_progress_timeout has the same default).
	DefaultPullProgressTimeout = 5 * time.Minute
	// maxRetryAfter caps how long a registry's Retry-After makes a pull wait
	// before the next attempt.
	maxRetryAfter = 10 * time.Second
	// maxRedirects is where a chain of redirects is taken for a loop (Go's
	// HTTP client gives up after 10 too).
	maxRedirects = 10
	// spaceCheckEvery is how many unpacked bytes pass between two checks of
	// the store's free space.
	spaceCheckEvery = 4 << 20
)

// ErrTooLarge: registry content is bigger than pier accepts (a manifest or
// config over its cap, a layer that unpacks to more than the configured
// limit).
var ErrTooLarge = errors.New("content too large")

// ErrNoSpace: the store's file system is (nearly) full.
var ErrNoSpace = errors.New("no space left for the image store")

// limitTransport bounds what a registry can make a pull spend: manifest
// bodies are cut at MaxManifestBytes, a request or body that receives no
// byte for the progress timeout is cancelled, a registry's Retry-After is
// honoured (up to maxRetryAfter) before the retrying transport above it
// tries again, and a redirect loop ends with a clear error.
type limitTransport struct {
	next     http.RoundTripper
	progress time.Duration // 0: no progress timeout
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if n := redirects(req); n >= maxRedirects {
		return nil, errorf(ErrUnavailable, "registry %s redirected %d times in a row (a redirect loop?) while fetching %s; fix the registry or its proxy", req.URL.Host, n, req.URL.Path)
	}
	ctx, cancel := context.WithCancel(req.Context())
	w := &watchdog{cancel: cancel, host: req.URL.Host, path: req.URL.Path, timeout: t.progress}
	w.start()
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		w.stop()
		return nil, w.explain(err)
	}
	if req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/manifests/") && resp.StatusCode == http.StatusOK {
		if resp.ContentLength > MaxManifestBytes {
			w.stop()
			resp.Body.Close()
			return nil, tooLarge("manifest", req, resp.ContentLength, MaxManifestBytes)
		}
		resp.Body = &capReader{ReadCloser: resp.Body, left: MaxManifestBytes, what: "manifest", req: req}
	}
	resp.Body = &watchedBody{ReadCloser: resp.Body, w: w}
	if wait, ok := retryAfter(resp); ok {
		// The retrying transport above tries again after its own back-off:
		// wait first for what the registry asked (bounded).
		w.pause()
		timer := time.NewTimer(min(wait, maxRetryAfter))
		select {
		case <-timer.C:
		case <-req.Context().Done():
			timer.Stop()
		}
		w.progress()
	}
	return resp, nil
}

func tooLarge(what string, req *http.Request, size, limit int64) error {
	sz := "more than " + strconv.FormatInt(limit, 10)
	if size >= 0 {
		sz = strconv.FormatInt(size, 10)
	}
	return errorf(ErrTooLarge, "%s from registry %s (%s) is %s bytes; pier accepts at most %d MiB", what, req.URL.Host, req.URL.Path, sz, limit>>20)
}

// redirects counts the redirects that led to req.
func redirects(req *http.Request) int {
	n := 0
	for r := req.Response; r != nil && r.Request != nil; r = r.Request.Response {
		n++
	}
	return n
}

// retryAfter returns the wait a 429 or 503 response asks for.
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return 0, false
	}
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second, true
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(time.Until(at), 0), true
	}
	return 0, false
}

// capReader fails a body that runs past left bytes.
type capReader struct {
	io.ReadCloser
	left int64
	what string
	req  *http.Request
}

func (c *capReader) Read(p []byte) (int, error) {
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.ReadCloser.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return 0, tooLarge(c.what, c.req, -1, MaxManifestBytes)
	}
	return n, err
}

// watchdog cancels a request that receives no byte for its timeout.
type watchdog struct {
	cancel  context.CancelFunc
	host    string
	path    string
	timeout time.Duration

	mu      sync.Mutex
	timer   *time.Timer
	stalled bool
}

func (w *watchdog) start() {
	if w.timeout <= 0 {
		return
	}
	w.timer = time.AfterFunc(w.timeout, func() {
		w.mu.Lock()
		w.stalled = true
		w.mu.Unlock()
		w.cancel()
	})
}

// progress pushes the deadline back.
func (w *watchdog) progress() {
	if w.timer != nil {
		w.timer.Reset(w.timeout)
	}
}

// pause stops the clock until the next progress.
func (w *watchdog) pause() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

func (w *watchdog) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
	w.cancel()
}

// explain replaces the cancellation the watchdog caused by what happened.
func (w *watchdog) explain(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stalled {
		return err
	}
	return errorf(ErrUnavailable, "registry %s sent nothing for %v while serving %s: pull cancelled (image_pull_progress_timeout)", w.host, w.timeout, w.path)
}

// watchedBody is a response body under a watchdog.
type watchedBody struct {
	io.ReadCloser
	w *watchdog
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.w.progress()
	}
	if err != nil && err != io.EOF {
		err = b.w.explain(err)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.w.stop()
	return b.ReadCloser.Close()
}

// spaceGuard stops a layer that unpacks to more than the configured
// uncompressed limit or would leave the store's file system with less than
// its reserve free. It counts both the tar stream and the sizes its headers
// declare: a sparse file's few stream bytes can declare terabytes.
type spaceGuard struct {
	r       io.Reader
	layer   string
	dir     string // where the layer is unpacked
	limit   int64  // 0: none
	read    int64  // tar stream bytes
	files   int64  // sizes the headers declare
	checked int64  // total at the last free-space check
}

func (g *spaceGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	g.read += int64(n)
	if cerr := g.check(0); cerr != nil {
		return n, cerr
	}
	return n, err
}

// filter is an archive.Filter that counts the size each header declares.
func (g *spaceGuard) filter(h *tar.Header) (bool, error) {
	if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeGNUSparse {
		g.files += h.Size
		return true, g.check(h.Size)
	}
	return true, nil
}

// check fails once the layer is over its limit, or when the file system
// lacks next bytes beyond its reserve (checked every spaceCheckEvery).
func (g *spaceGuard) check(next int64) error {
	total := max(g.read, g.files)
	if g.limit > 0 && total > g.limit {
		return errorf(ErrTooLarge, "layer %s unpacks to more than %d bytes, the node's limit (max_layer_uncompressed_bytes)", g.layer, g.limit)
	}
	if total-g.checked < spaceCheckEvery && next < spaceCheckEvery {
		return nil
	}
	g.checked = total
	if err := checkFree(g.dir, next); err != nil {
		return fmt.Errorf("unpack layer %s: %w", g.layer, err)
	}
	return nil
}

// checkFree fails if dir's file system would have less free space than
// its reserve (1% of its size, at least 4 MiB and at most 256 MiB) after
// need more bytes are written.
func checkFree(dir string, need int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return err
	}
	total := int64(st.Blocks) * st.Bsize
	free := int64(st.Bavail) * st.Bsize
	reserve := min(max(total/100, 4<<20), 256<<20)
	if free-need < reserve {
		return errorf(ErrNoSpace, "the file system of %s is full (%d MiB free, %d MiB kept in reserve): free some space or remove unused images", dir, free>>20, reserve>>20)
	}
	return nil
}
