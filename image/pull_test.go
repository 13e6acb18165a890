package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pier-runtime/pier/platform"
)

// fakeRegistry serves manifests and blobs from memory, with handlers a
// test can put in front of any path.
type fakeRegistry struct {
	srv *httptest.Server

	mu       sync.Mutex
	content  map[string][]byte       // by URL path
	types    map[string]string       // media type by URL path
	handlers map[string]http.Handler // override, by URL path
	requests map[string]int
}

func newFakeRegistry(t *testing.T) *fakeRegistry {
	r := &fakeRegistry{content: map[string][]byte{}, types: map[string]string{}, handlers: map[string]http.Handler{}, requests: map[string]int{}}
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *fakeRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests[req.URL.Path]++
	h, data, mt := r.handlers[req.URL.Path], r.content[req.URL.Path], r.types[req.URL.Path]
	r.mu.Unlock()
	switch {
	case h != nil:
		h.ServeHTTP(w, req)
	case req.URL.Path == "/v2/":
		w.WriteHeader(http.StatusOK)
	case data != nil:
		if mt != "" {
			w.Header().Set("Content-Type", mt)
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		if req.Method != http.MethodHead {
			w.Write(data)
		}
	default:
		http.NotFound(w, req)
	}
}

func (r *fakeRegistry) put(path, mediaType string, data []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.content[path], r.types[path] = data, mediaType
}

func (r *fakeRegistry) host() string { return strings.TrimPrefix(r.srv.URL, "http://") }

func (r *fakeRegistry) handle(path string, h http.HandlerFunc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h == nil {
		delete(r.handlers, path)
		return
	}
	r.handlers[path] = h
}

func (r *fakeRegistry) count(path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests[path]
}

func digestOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func blobPath(d v1.Hash) string { return "/v2/test/img/blobs/" + d.String() }

// testImage is an image the fake registry serves as test/img:<tag>.
type testImage struct {
	manifest, config []byte
	layers           [][]byte // gzipped tars
	configDesc       v1.Descriptor
}

// layerTar returns a gzipped tar of files, and its diff ID.
func layerTar(t testing.TB, files map[string]string) ([]byte, v1.Hash) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for name, body := range files {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg})
		tw.Write([]byte(body))
	}
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw.Bytes())
	zw.Close()
	return gz.Bytes(), digestOf(raw.Bytes())
}

// makeImage builds an image of the given gzipped layers (with their diff IDs).
func makeImage(t testing.TB, layers [][]byte, diffIDs []v1.Hash) *testImage {
	return makeImageFor(t, platform.Native(), layers, diffIDs)
}

// makeImageFor builds an image whose config names platform p.
func makeImageFor(t testing.TB, p platform.Platform, layers [][]byte, diffIDs []v1.Hash) *testImage {
	cfg := v1.ConfigFile{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant, RootFS: v1.RootFS{Type: "layers", DiffIDs: diffIDs}}
	config, _ := json.Marshal(cfg)
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(config)), Digest: digestOf(config)}}
	for _, l := range layers {
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: types.OCILayer, Size: int64(len(l)), Digest: digestOf(l)})
	}
	manifest, _ := json.Marshal(m)
	return &testImage{manifest: manifest, config: config, layers: layers, configDesc: m.Config}
}

func (r *fakeRegistry) serve(tag string, img *testImage) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.content["/v2/test/img/manifests/"+tag] = img.manifest
	r.types["/v2/test/img/manifests/"+tag] = string(types.OCIManifestSchema1)
	r.content[blobPath(digestOf(img.config))] = img.config
	for _, l := range img.layers {
		r.content[blobPath(digestOf(l))] = l
	}
	return r.host() + "/test/img:" + tag
}

func smallImage(t testing.TB) *testImage {
	l, d := layerTar(t, map[string]string{"etc/hello": "hello\n"})
	return makeImage(t, [][]byte{l}, []v1.Hash{d})
}

func newTestStore(t *testing.T, opts Options) *Store {
	opts.Root = t.TempDir()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fastRetries makes the retrying transport wait milliseconds, not seconds.
func fastRetries(t *testing.T) {
	old := retryBackoff
	retryBackoff.Duration = time.Millisecond
	t.Cleanup(func() { retryBackoff = old })
}

// assertNoPartialLayers fails if the store's layer directory holds anything
// but the layers it has recorded.
func assertNoPartialLayers(t *testing.T, s *Store) {
	t.Helper()
	entries, err := os.ReadDir(s.layersDir())
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range entries {
		if s.layers["sha256:"+e.Name()] == nil {
			t.Errorf("leftover in the layer store: %s", e.Name())
		}
	}
}

// zeros streams n zero bytes without holding them.
type zeros struct{ n int64 }

func (z *zeros) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

// allocDuring returns how many bytes f allocated on the heap.
func allocDuring(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

const hugeBody = 256 << 20

// A hostile registry cannot make a pull allocate without bound: oversized
// manifests and configs, declared or not, are refused after a few MiB.
// Before the caps, the 256 MiB config made the pull allocate over 500 MiB
// and a 256 MiB manifest over 100 MiB.
func TestOversizedContent(t *testing.T) {
	reg := newFakeRegistry(t)
	s := newTestStore(t, Options{})
	streamZeros := func(contentLength bool, mediaType string) http.HandlerFunc {
		return func(w http.ResponseWriter, req *http.Request) {
			if mediaType != "" {
				w.Header().Set("Content-Type", mediaType)
			}
			if contentLength {
				w.Header().Set("Content-Length", fmt.Sprint(hugeBody))
			}
			io.Copy(w, &zeros{hugeBody})
		}
	}

	// A config whose descriptor declares 256 MiB.
	declared := smallImage(t)
	var m v1.Manifest
	json.Unmarshal(declared.manifest, &m)
	m.Config.Size = hugeBody
	m.Config.Digest = digestOf([]byte("huge"))
	declared.manifest, _ = json.Marshal(m)
	refDeclared := reg.serve("declared", declared)
	reg.handle(blobPath(m.Config.Digest), streamZeros(true, ""))

	// A config whose descriptor declares its true small size, served as
	// 256 MiB without a Content-Length.
	undeclared := smallImage(t)
	refUndeclared := reg.serve("undeclared", undeclared)
	reg.handle(blobPath(undeclared.configDesc.Digest), streamZeros(false, ""))

	// Manifests of 256 MiB, with and without a Content-Length.
	reg.handle("/v2/test/img/manifests/hugemanifest", streamZeros(true, string(types.OCIManifestSchema1)))
	reg.handle("/v2/test/img/manifests/chunkedmanifest", streamZeros(false, string(types.OCIManifestSchema1)))

	// An index naming a 256 MiB manifest for this platform.
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
		MediaType: types.OCIManifestSchema1, Size: hugeBody, Digest: digestOf([]byte("m")),
		Platform: &v1.Platform{OS: "linux", Architecture: platform.Native().Architecture},
	}}}
	rawIdx, _ := json.Marshal(idx)
	reg.put("/v2/test/img/manifests/index", string(types.OCIImageIndex), rawIdx)
	reg.handle("/v2/test/img/manifests/"+idx.Manifests[0].Digest.String(), streamZeros(false, string(types.OCIManifestSchema1)))

	for name, ref := range map[string]string{
		"declared config":   refDeclared,
		"undeclared config": refUndeclared,
		"manifest":          reg.host() + "/test/img:hugemanifest",
		"chunked manifest":  reg.host() + "/test/img:chunkedmanifest",
		"index entry":       reg.host() + "/test/img:index",
	} {
		t.Run(name, func(t *testing.T) {
			var err error
			alloc := allocDuring(func() { _, err = s.Pull(context.Background(), ref, nil, nodeWide(t)) })
			t.Logf("%s: allocated %d MiB; %v", name, alloc>>20, err)
			if err == nil {
				t.Fatal("pulled")
			}
			if alloc > 64<<20 {
				t.Errorf("allocated %d MiB", alloc>>20)
			}
			if name != "undeclared config" && !errors.Is(err, ErrTooLarge) {
				t.Errorf("not ErrTooLarge: %v", err)
			}
			if !strings.Contains(err.Error(), reg.host()) {
				t.Errorf("error does not name the registry: %v", err)
			}
		})
	}
	assertNoPartialLayers(t, s)
}

// A layer that unpacks to more than the limit (a gzip bomb: 256 MiB of
// zeros in 256 KiB) is stopped, and leaves nothing behind.
func TestLayerUncompressedLimit(t *testing.T) {
	var raw bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&raw, gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: hugeBody, Typeflag: tar.TypeReg})
	io.Copy(tw, &zeros{hugeBody})
	tw.Close()
	zw.Close()
	bomb := raw.Bytes()
	// The diff ID is never checked: the limit stops the layer first.
	img := makeImage(t, [][]byte{bomb}, []v1.Hash{digestOf([]byte("diff"))})
	reg := newFakeRegistry(t)
	ref := reg.serve("bomb", img)

	s := newTestStore(t, Options{MaxLayerUncompressedBytes: 16 << 20})
	_, err := s.Pull(context.Background(), ref, nil, nodeWide(t))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "max_layer_uncompressed_bytes") {
		t.Fatalf("gzip bomb (%d KiB): %v", len(bomb)>>10, err)
	}
	t.Logf("gzip bomb of %d KiB: %v", len(bomb)>>10, err)
	assertNoPartialLayers(t, s)
	if s.Usage().Bytes != 0 {
		t.Fatalf("usage %d", s.Usage().Bytes)
	}
}

// A registry that stops sending mid-blob is given up on after the progress
// timeout, with an error naming the blob and the registry.
func TestPullProgressTimeout(t *testing.T) {
	img := smallImage(t)
	reg := newFakeRegistry(t)
	ref := reg.serve("stall", img)
	layer := img.layers[0]
	reg.handle(blobPath(digestOf(layer)), func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(layer)))
		w.Write(layer[:len(layer)/2])
		w.(http.Flusher).Flush()
		<-req.Context().Done()
	})
	s := newTestStore(t, Options{PullProgressTimeout: time.Second})
	_, err := s.Pull(context.Background(), ref, nil, nodeWide(t))
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "image_pull_progress_timeout") ||
		!strings.Contains(err.Error(), digestOf(layer).String()) || !strings.Contains(err.Error(), reg.host()) {
		t.Fatalf("stalled pull: %v", err)
	}
	assertNoPartialLayers(t, s)
	reg.handle(blobPath(digestOf(layer)), nil)
	if _, err := s.Pull(context.Background(), ref, nil, nodeWide(t)); err != nil {
		t.Fatalf("clean pull after the stall: %v", err)
	}
}

// 5xx and 429 answers are retried (429's Retry-After honoured); a redirect
// loop ends with an error that says so.
func TestPullRetriesAndRedirectLoop(t *testing.T) {
	fastRetries(t)
	img := smallImage(t)
	reg := newFakeRegistry(t)
	ref := reg.serve("flaky", img)
	var failures atomic.Int32
	failures.Store(3)
	manifest := "/v2/test/img/manifests/flaky"
	reg.handle(manifest, func(w http.ResponseWriter, req *http.Request) {
		switch failures.Add(-1) {
		case 2:
			w.WriteHeader(http.StatusInternalServerError)
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 0:
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
			w.Write(img.manifest)
		}
	})
	s := newTestStore(t, Options{})
	if _, err := s.Pull(context.Background(), ref, nil, nodeWide(t)); err != nil {
		t.Fatalf("pull with 3 transient failures: %v", err)
	}
	if n := reg.count(manifest); n != 4 {
		t.Fatalf("%d manifest requests, want 4", n)
	}

	l, d := layerTar(t, map[string]string{"loop": "x"})
	img2 := makeImage(t, [][]byte{l}, []v1.Hash{d})
	ref2 := reg.serve("loop", img2)
	reg.handle(blobPath(digestOf(l)), func(w http.ResponseWriter, req *http.Request) {
		http.Redirect(w, req, req.URL.Path, http.StatusTemporaryRedirect)
	})
	_, err := s.Pull(context.Background(), ref2, nil, nodeWide(t))
	if err == nil || !strings.Contains(err.Error(), "redirect loop") || !strings.Contains(err.Error(), reg.host()) {
		t.Fatalf("redirect loop: %v", err)
	}
	assertNoPartialLayers(t, s)
}

// Concurrent pulls of one image share one download, and the first
// caller's leaving does not cancel it for the others.
func TestConcurrentPullsShareDownload(t *testing.T) {
	img := smallImage(t)
	reg := newFakeRegistry(t)
	ref := reg.serve("shared", img)
	layer := img.layers[0]
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	reg.handle(blobPath(digestOf(layer)), func(w http.ResponseWriter, req *http.Request) {
		once.Do(func() { close(started) })
		<-release
		w.Header().Set("Content-Length", fmt.Sprint(len(layer)))
		w.Write(layer)
	})
	s := newTestStore(t, Options{})
	first, cancelFirst := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() { _, err := s.Pull(first, ref, nil, nodeWide(t)); firstErr <- err }()
	<-started
	secondDone := make(chan error, 1)
	go func() { _, err := s.Pull(context.Background(), ref, nil, nodeWide(t)); secondDone <- err }()
	for !s.waiting(ref, 2) {
		runtime.Gosched()
	}
	cancelFirst()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: %v", err)
	}
	close(release)
	if err := <-secondDone; err != nil {
		t.Fatalf("second caller: %v", err)
	}
	if n := reg.count(blobPath(digestOf(layer))); n != 1 {
		t.Fatalf("layer downloaded %d times", n)
	}
}

// waiting reports whether n callers wait for the pull of ref.
func (s *Store) waiting(ref string, n int) bool {
	named, _ := normalize(ref)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, f := range s.flights {
		if k.ref == named.String() && f.waiters == n {
			return true
		}
	}
	return false
}

// Every caller leaving cancels the download, and leaves nothing behind.
func TestAllCallersLeaveCancelsPull(t *testing.T) {
	img := smallImage(t)
	reg := newFakeRegistry(t)
	ref := reg.serve("abandoned", img)
	layer := img.layers[0]
	started := make(chan struct{})
	cancelled := make(chan struct{})
	reg.handle(blobPath(digestOf(layer)), func(w http.ResponseWriter, req *http.Request) {
		close(started)
		<-req.Context().Done()
		close(cancelled)
	})
	s := newTestStore(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := s.Pull(ctx, ref, nil, nodeWide(t)); done <- err }()
	<-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("pull: %v", err)
	}
	<-cancelled // the registry saw the download end
	for !s.idle() {
		runtime.Gosched()
	}
	assertNoPartialLayers(t, s)
}

func (s *Store) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.flights) == 0 && len(s.inflight) == 0 && len(s.leases) == 0
}

// Hold resolves and leases at once: an image removed right after Hold
// keeps its layers until the holder releases them. Before, Remove could run
// between the resolution and the lease and delete the layers.
func TestHoldRacesRemove(t *testing.T) {
	img := smallImage(t)
	reg := newFakeRegistry(t)
	ref := reg.serve("held", img)
	s := newTestStore(t, Options{})
	pulled, err := s.Pull(context.Background(), ref, nil, nodeWide(t))
	if err != nil {
		t.Fatal(err)
	}
	s.testHookHeld = func() {
		if err := s.Remove(pulled.ID); err != nil {
			t.Error(err)
		}
	}
	chains, err := s.Hold("ctr", pulled.ID)
	if err != nil {
		t.Fatal(err)
	}
	chainIDs := chains[0]
	for _, id := range chainIDs {
		if _, err := os.Stat(s.LayerDir(id)); err != nil {
			t.Fatalf("held layer gone: %v", err)
		}
	}
	s.testHookHeld = nil
	if _, err := s.Hold("ctr2", pulled.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("hold of a removed image: %v", err)
	}
	// A container and its image volumes: one missing image fails the hold
	// of all, and leases nothing.
	if _, err := s.Hold("ctr3", "sha256:"+strings.Repeat("0", 64), pulled.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("hold of a removed image volume: %v", err)
	}
	s.Release("ctr")
	for _, id := range chainIDs {
		if _, err := os.Stat(s.LayerDir(id)); !os.IsNotExist(err) {
			t.Fatalf("released layer of a removed image kept: %v", err)
		}
	}
	if !s.idle() {
		t.Fatalf("leases left: %v", s.leases)
	}
}

// sparseBomb returns a tar holding one PAX sparse file whose few data bytes
// declare size bytes of file: a bomb that unpacks to size bytes of zeros.
func sparseBomb(t testing.TB, size int64) []byte {
	records := ""
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"}, {"GNU.sparse.name", "bomb"}, {"GNU.sparse.realsize", fmt.Sprint(size)}} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec) + 1
		for len(fmt.Sprint(n))+len(rec) != n {
			n++
		}
		records += fmt.Sprint(n) + rec
	}
	sparseMap := make([]byte, 512)
	copy(sparseMap, "1\n0\n1\n") // one data byte at offset 0, the rest a hole
	body := append(sparseMap, 'x')
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "PaxHeaders/bomb", Typeflag: tar.TypeReg, Size: int64(len(records)), Format: tar.FormatUSTAR})
	tw.Write([]byte(records))
	tw.Flush()
	tw.WriteHeader(&tar.Header{Name: "GNUSparseFile.0/bomb", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body)), Format: tar.FormatUSTAR})
	tw.Write(body)
	tw.Close()
	raw := buf.Bytes()
	// Make the first header a PAX extended header, with its checksum.
	hdr := raw[:512]
	hdr[156] = tar.TypeXHeader
	copy(hdr[148:156], "        ")
	sum := 0
	for _, b := range hdr {
		sum += int(b)
	}
	copy(hdr[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return raw
}

// A sparse file declaring far more than its stream bytes counts for what
// it declares: it is stopped by the limit, not written out as zeros.
func TestSparseBomb(t *testing.T) {
	raw := sparseBomb(t, 1<<40)
	tr := tar.NewReader(bytes.NewReader(raw))
	if h, err := tr.Next(); err != nil || h.Size != 1<<40 || h.Name != "bomb" {
		t.Fatalf("sparse bomb: %+v, %v", h, err)
	}
	dir := t.TempDir()
	guard := &spaceGuard{layer: "bomb", dir: dir, limit: 16 << 20}
	err := applyLayer(context.Background(), filepath.Join(dir), bytes.NewReader(raw), guard)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a %d-byte tar declaring 1 TiB: %v", len(raw), err)
	}
	// Without a limit, the store's free space bounds it.
	guard = &spaceGuard{layer: "bomb", dir: dir}
	if err := applyLayer(context.Background(), dir, bytes.NewReader(raw), guard); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("without a limit: %v", err)
	}
}

// A new image's record is written once, with its names: a store reloaded
// after one pull lists the image under its tag and digest.
func TestPulledRecordHasNames(t *testing.T) {
	reg := newFakeRegistry(t)
	ref := reg.serve("named", smallImage(t))
	s := newTestStore(t, Options{})
	img, err := s.Pull(context.Background(), ref, nil, nodeWide(t))
	if err != nil {
		t.Fatal(err)
	}
	reloaded, err := New(Options{Root: s.root})
	if err != nil {
		t.Fatal(err)
	}
	list := reloaded.List()
	if len(list) != 1 || list[0].ID != img.ID || !slices.Equal(list[0].RepoTags, []string{ref}) || len(list[0].RepoDigests) != 1 {
		t.Fatalf("after a reload: %+v", list)
	}
}
