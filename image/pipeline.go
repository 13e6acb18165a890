package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	kgzip "github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// A layer is unpacked by three goroutines joined by readahead buffers, so
// that a layer's stages run on as many cores as there are:
//
//	blob (HTTP body, digest verified as read) ─readahead─►
//	decompress, diff ID hash ─readahead─► tar apply (file writes)
//
// Each stage's cost is of the same order (a SHA-256 of 200 MB is ~100 ms on
// a core with SHA extensions, and so is writing it to the page cache).
const (
	// aheadChunk is the size of one readahead buffer: large enough that
	// reading a socket or handing a chunk over costs little per byte.
	aheadChunk = 256 << 10
	// aheadChunks is how many buffers each readahead stage holds, 1 MiB.
	aheadChunks = 4
)

var errAheadClosed = errors.New("read after the readahead was closed")

// chunkPool recycles readahead buffers across layers and pulls.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, aheadChunk); return &b }}

// chunk is a filled buffer, or the error that ended the source.
type chunk struct {
	buf *[]byte
	n   int
	err error
}

// readahead reads its source in a goroutine of its own, up to aheadChunks
// buffers ahead of its reader, and hands the bytes over in order, then the
// error that ended the source. Read is for one goroutine; Close may be
// called from another, and more than once.
type readahead struct {
	full   chan chunk
	stop   chan struct{}
	exited chan struct{}
	closer io.Closer // closed by Close before waiting, to end a blocked read
	once   sync.Once

	cur chunk // being read; cur.buf[off:cur.n] is left
	off int
	err error // the source's, once reached

	failed atomic.Pointer[error] // err, if not EOF: for any goroutine
}

// sourceErr returns the error other than EOF that the source ended with,
// once the reader has reached it: a reader that fails because its source
// did has set it before it returns. Any goroutine may call it.
func (r *readahead) sourceErr() error {
	if p := r.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// end records the error that ended the source.
func (r *readahead) end(err error) {
	r.err = err
	if err != io.EOF {
		r.failed.Store(&err)
	}
}

// newReadahead starts reading src. If closer is not nil, Close closes it
// first to end a read that blocks (an HTTP body's).
func newReadahead(src io.Reader, closer io.Closer) *readahead {
	r := &readahead{
		full:   make(chan chunk, aheadChunks),
		stop:   make(chan struct{}),
		exited: make(chan struct{}),
		closer: closer,
	}
	go r.fill(src)
	return r
}

func (r *readahead) fill(src io.Reader) {
	defer close(r.exited)
	for {
		buf := chunkPool.Get().(*[]byte)
		n, err := fillChunk(src, *buf)
		select {
		case r.full <- chunk{buf: buf, n: n, err: err}:
		case <-r.stop:
			chunkPool.Put(buf)
			return
		}
		if err != nil {
			return
		}
	}
}

// fillChunk reads src until buf is full or src fails, and returns that
// error (io.EOF at the end) as src returned it.
func fillChunk(src io.Reader, buf []byte) (int, error) {
	n, empty := 0, 0
	for n < len(buf) {
		k, err := src.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
		if k > 0 {
			empty = 0
		} else if empty++; empty == 100 {
			return n, io.ErrNoProgress
		}
	}
	return n, nil
}

func (r *readahead) Read(p []byte) (int, error) {
	for r.cur.buf == nil || r.off == r.cur.n {
		if r.err != nil {
			return 0, r.err
		}
		r.release()
		select {
		case c := <-r.full:
			r.cur, r.off = c, 0
			if c.n == 0 {
				r.end(c.err)
				r.release()
			}
		case <-r.stop:
			return 0, errAheadClosed
		}
	}
	n := copy(p, (*r.cur.buf)[r.off:r.cur.n])
	r.off += n
	if r.off == r.cur.n && r.cur.err != nil {
		r.end(r.cur.err)
		r.release()
		return n, nil // the error on the next call, as io.Reader allows
	}
	return n, nil
}

// release recycles the current buffer.
func (r *readahead) release() {
	if r.cur.buf != nil {
		chunkPool.Put(r.cur.buf)
	}
	r.cur, r.off = chunk{}, 0
}

// Close stops the goroutine and waits for it to end: after Close, nothing
// reads the source. It does not wait for a Read under way in another
// goroutine, which returns errAheadClosed.
func (r *readahead) Close() error {
	r.once.Do(func() {
		close(r.stop)
		if r.closer != nil {
			r.closer.Close()
		}
		<-r.exited
		for {
			select {
			case c := <-r.full:
				chunkPool.Put(c.buf)
				continue
			default:
			}
			break
		}
	})
	return nil
}

// Magic numbers that open a compressed stream.
var (
	gzipMagic = []byte{0x1f, 0x8b, 0x08}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// zstd skippable frames open with 0x184D2A50 to 0x184D2A5F.
const (
	zstdSkippableMask  = 0xfffffff0
	zstdSkippableStart = 0x184d2a50
)

// compressionOf names the compression of a stream that opens with head:
// "gzip", "zstd", or "" for none (a plain tar).
func compressionOf(head []byte) string {
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return "gzip"
	case bytes.HasPrefix(head, zstdMagic):
		return "zstd"
	case len(head) >= 8 && binary.LittleEndian.Uint32(head)&zstdSkippableMask == zstdSkippableStart:
		return "zstd"
	}
	return ""
}

// decompress returns the tar stream of the layer blob r, decoded by its
// magic number (the media type is not trusted to tell): gzip and zstd with
// klauspost/compress's decoders, anything else as a plain tar.
func decompress(r io.Reader) (io.ReadCloser, error) {
	head := make([]byte, 10)
	n, err := io.ReadFull(r, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, err
	}
	head = head[:n]
	src := io.MultiReader(bytes.NewReader(head), r)
	switch compressionOf(head) {
	case "gzip":
		zr, err := kgzip.NewReader(src)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, nil
	case "zstd":
		// The readahead stages already overlap the decoding with the rest:
		// one goroutine decodes (the stage's), trading memory for speed.
		zr, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(false))
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		return zr.IOReadCloser(), nil
	}
	return io.NopCloser(src), nil
}
