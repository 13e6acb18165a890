package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/archive"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/internal/atomicfile"
	"github.com/pier-runtime/pier/internal/du"
)

// layerRecord is layers/<chain>/layer.json.
type layerRecord struct {
	Version   int       `json:"version"`
	ChainID   string    `json:"chainID"`
	DiffID    string    `json:"diffID"`
	Digest    string    `json:"digest"`
	Size      int64     `json:"size"`
	MediaType string    `json:"mediaType"`
	Usage     du.Usage  `json:"usage"`
	Unpacked  time.Time `json:"unpacked"`
}

// unpackResult lets concurrent pulls of one layer wait for the first.
type unpackResult struct {
	done chan struct{}
	err  error
}

func (s *Store) layerDir(chainID string) string {
	return filepath.Join(s.layersDir(), strings.TrimPrefix(chainID, "sha256:"))
}

// LayerDir is the directory holding the unpacked files of a layer.
func (s *Store) LayerDir(chainID string) string {
	return filepath.Join(s.layerDir(chainID), "fs")
}

func (s *Store) loadLayers() error {
	entries, err := os.ReadDir(s.layersDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		dir := filepath.Join(s.layersDir(), e.Name())
		var rec layerRecord
		data, err := os.ReadFile(filepath.Join(dir, "layer.json"))
		if err == nil {
			err = json.Unmarshal(data, &rec)
		}
		if err == nil && (rec.Version != recordVersion || s.layerDir(rec.ChainID) != dir) {
			err = fmt.Errorf("record does not match its directory")
		}
		if err != nil {
			klog.ErrorS(err, "Dropping unreadable layer", "dir", dir)
			if err := s.deleteDir(dir); err != nil {
				return err
			}
			continue
		}
		s.layers[rec.ChainID] = &rec
	}
	return nil
}

// fetchFunc opens a layer blob. The stream it returns fails on its last read
// if the content does not match the blob's digest and size.
type fetchFunc func() (io.ReadCloser, error)

// ensureLayer makes sure layer l is unpacked, fetching it unless it is
// already there. Concurrent calls for one layer unpack it once.
func (s *Store) ensureLayer(ctx context.Context, l Layer, fetch fetchFunc, done *atomic.Int64) error {
	for {
		s.mu.Lock()
		if s.layers[l.ChainID] != nil {
			s.mu.Unlock()
			done.Add(l.Size)
			return nil
		}
		if r := s.inflight[l.ChainID]; r != nil {
			s.mu.Unlock()
			select {
			case <-r.done:
				if r.err != nil && ctx.Err() == nil {
					// The other pull failed, perhaps cancelled: try ourselves.
					continue
				}
				if r.err != nil {
					return r.err
				}
				continue // recorded now: counted in the next pass
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		r := &unpackResult{done: make(chan struct{})}
		s.inflight[l.ChainID] = r
		s.mu.Unlock()

		rec, err := s.unpack(ctx, l, fetch, done)
		s.mu.Lock()
		delete(s.inflight, l.ChainID)
		if err == nil {
			s.layers[l.ChainID] = rec
		}
		s.mu.Unlock()
		r.err = err
		close(r.done)
		return err
	}
}

// unpack fetches layer l and unpacks it into a dot-named directory that is
// renamed into place only once the blob's digest and the tar's diff ID have
// been verified.
func (s *Store) unpack(ctx context.Context, l Layer, fetch fetchFunc, done *atomic.Int64) (*layerRecord, error) {
	start := time.Now()
	tmp, err := os.MkdirTemp(s.layersDir(), ".tmp-"+strings.TrimPrefix(l.ChainID, "sha256:")[:12]+"-")
	if err != nil {
		return nil, err
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(tmp)
		}
	}()
	fsDir := filepath.Join(tmp, "fs")
	if err := os.Mkdir(fsDir, 0o755); err != nil {
		return nil, err
	}
	if err := checkFree(s.layersDir(), 0); err != nil {
		return nil, fmt.Errorf("pull layer %s: %w", l.Digest, err)
	}
	blob, err := fetch()
	if err != nil {
		return nil, err
	}
	// Three stages (pipeline.go): the blob is read and its digest checked
	// in one goroutine, decompressed and hashed in another, unpacked in
	// this one. Stopping them all, the blob's reader first (closing the
	// blob ends a read that blocks), leaves nothing running.
	counted := &countingReader{r: blob, n: done}
	compressed := newReadahead(counted, blob)
	var plain *readahead
	var tarStream io.ReadCloser
	stop := func() {
		compressed.Close()
		if plain != nil {
			plain.Close()
			tarStream.Close()
		}
	}
	defer stop()
	// blobFailed explains a blob whose stream ended in an error, as the
	// stage reading it saw: the connection broke, or the content did not
	// match its digest or size. It stops the pipeline then.
	blobFailed := func() error {
		err := compressed.sourceErr()
		if err == nil {
			return nil
		}
		stop()
		return blobError(l, counted.read, err)
	}
	// badLayer explains a blob that does not decompress or unpack (err):
	// it may not match its digest, which reading the rest of it (no more
	// than its declared size) tells.
	badLayer := func(err error) error {
		if plain != nil {
			plain.Close()
		}
		io.Copy(io.Discard, compressed)
		if berr := blobFailed(); berr != nil {
			return berr
		}
		return withKind(ErrBadLayer, fmt.Errorf("unpack layer %s: %w", l.Digest, err))
	}
	tarStream, err = decompress(compressed)
	if err != nil {
		return nil, badLayer(err)
	}
	diff := sha256.New()
	plain = newReadahead(io.TeeReader(tarStream, diff), nil)
	guard := &spaceGuard{layer: l.Digest, dir: s.layersDir(), limit: s.opts.MaxLayerUncompressedBytes}
	if err := applyLayer(ctx, fsDir, plain, guard); err != nil {
		if berr := blobFailed(); berr != nil {
			return nil, berr
		}
		var kerr *kindError
		switch {
		case errors.As(err, &kerr) || ctx.Err() != nil:
			return nil, err
		case errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT):
			return nil, errorf(ErrNoSpace, "unpack layer %s into %s: the file system is full (%v): free some space or remove unused images", l.Digest, s.root, err)
		}
		return nil, badLayer(err)
	}
	// Read what the tar reader left (end-of-archive padding) and the rest of
	// the blob: the digest and size are checked when the blob ends.
	if _, err := io.Copy(io.Discard, plain); err != nil {
		if berr := blobFailed(); berr != nil {
			return nil, berr
		}
		return nil, badLayer(err)
	}
	plain.Close() // ended: diff has it all
	if _, err := io.Copy(io.Discard, compressed); err != nil {
		if berr := blobFailed(); berr != nil {
			return nil, berr
		}
		return nil, withKind(ErrBadLayer, fmt.Errorf("layer %s: %w", l.Digest, err))
	}
	stop()
	if got := "sha256:" + hex.EncodeToString(diff.Sum(nil)); got != l.DiffID {
		return nil, errorf(ErrCorrupt, "layer %s: uncompressed content has digest %s, the image config says %s", l.Digest, got, l.DiffID)
	}
	u, err := du.Walk(fsDir)
	if err != nil {
		return nil, err
	}
	rec := &layerRecord{
		Version: recordVersion, ChainID: l.ChainID, DiffID: l.DiffID, Digest: l.Digest,
		Size: l.Size, MediaType: l.MediaType, Usage: u, Unpacked: time.Now().UTC(),
	}
	if err := atomicfile.WriteJSON(filepath.Join(tmp, "layer.json"), rec); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, s.layerDir(l.ChainID)); err != nil {
		return nil, err
	}
	keep = true
	if err := atomicfile.SyncDir(s.layersDir()); err != nil {
		return nil, err
	}
	klog.V(2).InfoS("Unpacked layer", "digest", l.Digest, "chainID", l.ChainID, "bytes", l.Size, "duration", time.Since(start))
	return rec, nil
}

// applyLayer unpacks the layer tar r into dir, converting whiteouts for
// overlayfs, within guard's bounds. Nothing is written outside dir.
func applyLayer(ctx context.Context, dir string, r io.Reader, guard *spaceGuard) error {
	guard.r = r
	_, err := archive.Apply(ctx, dir, guard, archive.WithConvertWhiteout(archive.OverlayConvertWhiteout), archive.WithFilter(guard.filter))
	return err
}

// blobError explains why reading a layer blob failed after read bytes
// with err: the connection broke off (worth a retry), or the content did
// not match its digest or size.
func blobError(l Layer, read int64, err error) error {
	var kerr *kindError
	if errors.As(err, &kerr) { // explained already (limitTransport)
		return fmt.Errorf("layer %s: %w", l.Digest, err)
	}
	var nerr net.Error
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.As(err, &nerr) {
		return errorf(ErrUnavailable, "download of layer %s broke off after %d of %d bytes: %v; pull again to retry", l.Digest, read, l.Size, err)
	}
	return errorf(ErrCorrupt, "layer %s: %v", l.Digest, err)
}

// countingReader adds the bytes read to a pull's progress counter.
type countingReader struct {
	r    io.Reader
	n    *atomic.Int64
	read int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	c.read += int64(n)
	return n, err
}
