package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/klauspost/compress/zstd"
)

// unevenReader returns what it holds in reads of varying size, then err.
type unevenReader struct {
	data []byte
	rng  *rand.Rand
	err  error
}

func (u *unevenReader) Read(p []byte) (int, error) {
	if len(u.data) == 0 {
		return 0, u.err
	}
	n := min(len(p), len(u.data), 1+u.rng.IntN(3*aheadChunk/2))
	copy(p, u.data[:n])
	u.data = u.data[n:]
	return n, nil
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rng := rand.NewChaCha8([32]byte{byte(seed)})
	rng.Read(b)
	return b
}

// A readahead hands over every byte in order, then the source's error, and
// tells which error that was.
func TestReadahead(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		size int
		err  error
	}{
		{0, io.EOF}, {1, io.EOF}, {aheadChunk, io.EOF}, {aheadChunk*aheadChunks*3 + 17, io.EOF},
		{0, boom}, {aheadChunk - 1, boom}, {aheadChunk*aheadChunks + 1, boom},
	} {
		t.Run(fmt.Sprintf("%d-%v", tc.size, tc.err), func(t *testing.T) {
			data := randomBytes(tc.size, uint64(tc.size))
			r := newReadahead(&unevenReader{data: data, rng: rand.New(rand.NewPCG(1, 2)), err: tc.err}, nil)
			defer r.Close()
			var got bytes.Buffer
			buf := make([]byte, 7919) // not a divisor of the chunk size
			var err error
			for err == nil {
				var n int
				n, err = r.Read(buf)
				got.Write(buf[:n])
			}
			if !bytes.Equal(got.Bytes(), data) {
				t.Fatalf("read %d bytes, not the %d of the source", got.Len(), len(data))
			}
			if err != tc.err {
				t.Fatalf("ended with %v, want %v", err, tc.err)
			}
			want := tc.err
			if want == io.EOF {
				want = nil
			}
			if r.sourceErr() != want {
				t.Fatalf("sourceErr %v, want %v", r.sourceErr(), want)
			}
			if _, err := r.Read(buf); err != tc.err {
				t.Fatalf("read after the end: %v", err)
			}
		})
	}
}

// blockingBody blocks every read until it is closed, like an HTTP body
// from a registry that stalls.
type blockingBody struct{ closed chan struct{} }

func (b *blockingBody) Read(p []byte) (int, error) {
	<-b.closed
	return 0, errors.New("read on closed body")
}

func (b *blockingBody) Close() error { close(b.closed); return nil }

// Close ends a source read that blocks, through the closer, and waits for
// the goroutine; a read under way in another goroutine returns. The error
// that closing caused is not taken for the source's.
func TestReadaheadCloseUnblocks(t *testing.T) {
	before := runtime.NumGoroutine()
	body := &blockingBody{closed: make(chan struct{})}
	r := newReadahead(body, body)
	readErr := make(chan error, 1)
	go func() { _, err := r.Read(make([]byte, 10)); readErr <- err }()
	time.Sleep(10 * time.Millisecond)
	closed := make(chan struct{})
	go func() { r.Close(); r.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := <-readErr; err != errAheadClosed {
		t.Fatalf("read under way: %v", err)
	}
	if err := r.sourceErr(); err != nil {
		t.Fatalf("sourceErr after Close: %v", err)
	}
	for i := 0; runtime.NumGoroutine() > before; i++ {
		if i == 1000 {
			t.Fatalf("%d goroutines left, %d before", runtime.NumGoroutine(), before)
		}
		time.Sleep(time.Millisecond)
	}
}

func tarOf(t testing.TB, files map[string][]byte) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	tw.Close()
	return buf.Bytes()
}

func gzipOf(raw []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(raw)
	zw.Close()
	return buf.Bytes()
}

func zstdOf(t testing.TB, raw []byte) []byte {
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return zw.EncodeAll(raw, nil)
}

// A zstd skippable frame (magic 0x184D2A5x, 4-byte length, content).
func skippableFrame(content []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x184d2a53)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(content)))
	return append(b, content...)
}

// decompress tells the compression by the stream's magic number.
func TestDecompress(t *testing.T) {
	raw := tarOf(t, map[string][]byte{"a": randomBytes(3<<20, 1), "b": []byte("hello\n")})
	for name, blob := range map[string][]byte{
		"gzip":            gzipOf(raw),
		"gzip, 2 members": append(gzipOf(raw[:1000]), gzipOf(raw[1000:])...),
		"zstd":            zstdOf(t, raw),
		"zstd skippable":  append(skippableFrame([]byte("pier")), zstdOf(t, raw)...),
		"plain":           raw,
	} {
		t.Run(name, func(t *testing.T) {
			rc, err := decompress(bytes.NewReader(blob))
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, raw) {
				t.Fatalf("decompressed %d bytes, not the %d-byte tar", len(got), len(raw))
			}
		})
	}
	for _, empty := range [][]byte{nil, {0x1f}} {
		rc, err := decompress(bytes.NewReader(empty))
		if err != nil {
			t.Fatalf("%x: %v", empty, err)
		}
		if got, _ := io.ReadAll(rc); !bytes.Equal(got, empty) {
			t.Fatalf("%x read as %x", empty, got)
		}
	}
	if _, err := decompress(bytes.NewReader([]byte{0x1f, 0x8b, 0x08, 0, 0})); err == nil {
		t.Fatal("a truncated gzip header decompressed")
	}
}

// Layers of every compression, several readahead chunks long, unpack with
// their content.
func TestPullCompressions(t *testing.T) {
	big := randomBytes(5*aheadChunk*aheadChunks/2, 7)
	var layers [][]byte
	var diffIDs []v1.Hash
	for i, compress := range []func([]byte) []byte{gzipOf, func(b []byte) []byte { return zstdOf(t, b) }, func(b []byte) []byte { return b }} {
		raw := tarOf(t, map[string][]byte{fmt.Sprintf("l%d/big", i): big, fmt.Sprintf("l%d/small", i): []byte("small\n")})
		layers = append(layers, compress(raw))
		diffIDs = append(diffIDs, digestOf(raw))
	}
	reg := newFakeRegistry(t)
	ref := reg.serve("compressions", makeImage(t, layers, diffIDs))
	s := newTestStore(t, Options{})
	img, err := s.Pull(context.Background(), ref, nil, nodeWide(t))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range img.Layers {
		for name, want := range map[string][]byte{"big": big, "small": []byte("small\n")} {
			got, err := os.ReadFile(filepath.Join(s.LayerDir(l.ChainID), fmt.Sprintf("l%d", i), name))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("layer %d, %s: %d bytes, %v", i, name, len(got), err)
			}
		}
	}
	assertNoPartialLayers(t, s)
}

// A layer whose blob does not match its digest never becomes visible, and
// the pull says the content is corrupt, wherever the change is: in the
// file data (the tar unpacks, the digest fails at the end), in the gzip
// header or trailer, or in a tar header. So does a layer whose tar does not
// match the config's diff ID.
func TestPullVerifiesLayers(t *testing.T) {
	fastRetries(t)
	raw := tarOf(t, map[string][]byte{"data/big": randomBytes(3<<20, 3), "etc/hello": []byte("hello\n")})
	blob := gzipOf(raw)
	corrupt := func(at int) []byte {
		b := bytes.Clone(blob)
		b[at] ^= 0x55
		return b
	}
	for name, tc := range map[string]struct {
		served []byte // for the blob's digest
		diffID v1.Hash
	}{
		"file data":     {corrupt(len(blob) / 2), digestOf(raw)},
		"gzip header":   {corrupt(3), digestOf(raw)},
		"gzip trailer":  {corrupt(len(blob) - 2), digestOf(raw)},
		"first header":  {corrupt(20), digestOf(raw)},
		"truncated":     {blob[:len(blob)-100], digestOf(raw)},
		"wrong diff ID": {blob, digestOf([]byte("something else"))},
	} {
		t.Run(name, func(t *testing.T) {
			img := makeImage(t, [][]byte{blob}, []v1.Hash{tc.diffID})
			reg := newFakeRegistry(t)
			ref := reg.serve("corrupt", img)
			served := tc.served
			reg.handle(blobPath(digestOf(blob)), func(w http.ResponseWriter, req *http.Request) {
				w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
				w.Write(served)
			})
			s := newTestStore(t, Options{})
			_, err := s.Pull(context.Background(), ref, nil, nodeWide(t))
			want := ErrCorrupt
			if name == "truncated" {
				want = ErrUnavailable // the connection broke off
			}
			if !errors.Is(err, want) {
				t.Fatalf("pull: %v, want %v", err, want)
			}
			s.mu.Lock()
			n := len(s.layers)
			s.mu.Unlock()
			if n != 0 {
				t.Fatalf("%d layers recorded", n)
			}
			assertNoPartialLayers(t, s)
		})
	}
}

// A layer stopped by the unpacker (here over the uncompressed limit) while
// the registry has stopped sending ends at once: stopping the pipeline
// closes the blob, which ends the read its first stage is blocked in.
func TestStoppedLayerDoesNotWaitForRegistry(t *testing.T) {
	raw := tarOf(t, map[string][]byte{"big": randomBytes(8<<20, 5)})
	blob := gzipOf(raw)
	img := makeImage(t, [][]byte{blob}, []v1.Hash{digestOf(raw)})
	reg := newFakeRegistry(t)
	ref := reg.serve("stalls", img)
	ended := make(chan struct{})
	reg.handle(blobPath(digestOf(blob)), func(w http.ResponseWriter, req *http.Request) {
		defer close(ended)
		w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
		// Over the limit, uncompressed, but less than the readahead holds:
		// the first stage has read it all and waits for more.
		w.Write(blob[:1200<<10])
		w.(http.Flusher).Flush()
		<-req.Context().Done() // then nothing, until the client goes
	})
	// Without the fix, the progress timeout would end the pull.
	s := newTestStore(t, Options{MaxLayerUncompressedBytes: 1 << 20, PullProgressTimeout: 15 * time.Second})
	start := time.Now()
	_, err := s.Pull(context.Background(), ref, nil, nodeWide(t))
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("pull: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the pull took %v: it waited for the registry", d)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the blob's request is still open")
	}
	assertNoPartialLayers(t, s)
}
