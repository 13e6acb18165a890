package testenv

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// entry is one entry of a layer tar. Entries are written in order, owned by
// root and with a fixed mtime, so layers are reproducible.
type entry struct {
	hdr  tar.Header
	body io.Reader // nil for entries without content
}

func dirEntry(name string, mode int64) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}}
}

func fileEntry(name string, mode int64, data []byte) entry {
	return streamEntry(name, mode, int64(len(data)), bytes.NewReader(data))
}

// streamEntry is a regular file of size bytes read from r.
func streamEntry(name string, mode, size int64, r io.Reader) entry {
	return entry{
		hdr:  tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: size},
		body: io.LimitReader(r, size),
	}
}

// linkEntry is a symbolic (tar.TypeSymlink) or hard (tar.TypeLink) link.
func linkEntry(typ byte, name, target string) entry {
	return entry{hdr: tar.Header{Typeflag: typ, Name: name, Linkname: target, Mode: 0o777}}
}

// deviceEntry is a character (tar.TypeChar) or block (tar.TypeBlock) device.
func deviceEntry(typ byte, name string, mode, major, minor int64) entry {
	return entry{hdr: tar.Header{Typeflag: typ, Name: name, Mode: mode, Devmajor: major, Devminor: minor}}
}

// writeTar writes entries as a tar stream to w.
func writeTar(w io.Writer, entries []entry) error {
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := e.hdr
		h.ModTime = time.Unix(0, 0)
		h.Uid, h.Gid = 0, 0
		if err := tw.WriteHeader(&h); err != nil {
			return fmt.Errorf("tar entry %s: %w", h.Name, err)
		}
		if e.body != nil {
			if _, err := io.Copy(tw, e.body); err != nil {
				return fmt.Errorf("tar entry %s: %w", h.Name, err)
			}
		}
	}
	return tw.Close()
}

// tarLayer builds an in-memory layer from entries.
func tarLayer(c compression.Compression, mt types.MediaType, entries ...entry) (*layer, error) {
	var buf bytes.Buffer
	if err := writeTar(&buf, entries); err != nil {
		return nil, err
	}
	return newLayer(buf.Bytes(), c, mt)
}

// layer is a v1.Layer whose digests and size are computed when it is built.
type layer struct {
	digest, diffID v1.Hash
	size           int64
	mediaType      types.MediaType
	compressed     func() (io.ReadCloser, error)
	uncompressed   func() (io.ReadCloser, error)
}

var _ v1.Layer = (*layer)(nil)

// newLayer returns the in-memory layer of the tar stream tarData compressed
// with c (compression.None, GZip or ZStd).
func newLayer(tarData []byte, c compression.Compression, mt types.MediaType) (*layer, error) {
	var blob []byte
	switch c {
	case compression.None:
		blob = tarData
	case compression.GZip:
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
		if err != nil {
			return nil, err
		}
		if _, err := zw.Write(tarData); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
		blob = buf.Bytes()
	case compression.ZStd:
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		blob = enc.EncodeAll(tarData, nil)
	default:
		return nil, fmt.Errorf("unsupported compression %q", c)
	}
	return &layer{
		digest:       sha256Hash(blob),
		diffID:       sha256Hash(tarData),
		size:         int64(len(blob)),
		mediaType:    mt,
		compressed:   bytesOpener(blob),
		uncompressed: bytesOpener(tarData),
	}, nil
}

// withMediaType returns a copy of l with another media type.
func (l *layer) withMediaType(mt types.MediaType) *layer {
	c := *l
	c.mediaType = mt
	return &c
}

// Digest implements v1.Layer.
func (l *layer) Digest() (v1.Hash, error) { return l.digest, nil }

// DiffID implements v1.Layer.
func (l *layer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// Compressed implements v1.Layer.
func (l *layer) Compressed() (io.ReadCloser, error) { return l.compressed() }

// Uncompressed implements v1.Layer.
func (l *layer) Uncompressed() (io.ReadCloser, error) { return l.uncompressed() }

// Size implements v1.Layer.
func (l *layer) Size() (int64, error) { return l.size, nil }

// MediaType implements v1.Layer.
func (l *layer) MediaType() (types.MediaType, error) { return l.mediaType, nil }

func bytesOpener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

func sha256Hash(b []byte) v1.Hash {
	h := sha256.New()
	h.Write(b)
	return hashOf(h)
}

// hashOf returns the digest in the sha256 hash h.
func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}
