package testenv

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"golang.org/x/sync/errgroup"
)

// Shape of the Big image's data layers.
const (
	bigLayers   = 4
	bigFiles    = 10
	bigFileSize = 5 << 20
	// bigVersion names the cached files: change it when their content changes.
	bigVersion = "v1"
)

// BigCacheDir is where tests and the benchmark keep Big's layer files.
const BigCacheDir = "/var/cache/pier-e2e/big"

// Big returns the benchmark image (about 211 MB): the busybox layer and four
// layers of ten 5 MiB files of incompressible pseudo-random data, gzip
// compressed. The layers are files in dir, built in parallel on first use and
// reused afterwards.
func Big(dir string) (v1.Image, error) {
	layers, err := bigLayerFiles(dir)
	if err != nil {
		return nil, err
	}
	ls := make([]v1.Layer, len(layers))
	for i, l := range layers {
		ls[i] = l
	}
	return newImage(linuxAMD64, false, shCmd, ls...)
}

// BigLayerFiles returns the compressed (.tar.gz) files of Big's five layers,
// in order, building them in dir if needed.
func BigLayerFiles(dir string) ([]string, error) {
	layers, err := bigLayerFiles(dir)
	if err != nil {
		return nil, err
	}
	paths := make([]string, len(layers))
	for i, l := range layers {
		paths[i] = l.path
	}
	return paths, nil
}

// fileLayer is a gzip layer stored in a file.
type fileLayer struct {
	*layer
	path string
}

// layerInfo is the sidecar file of a cached layer file.
type layerInfo struct {
	Digest v1.Hash `json:"digest"`
	DiffID v1.Hash `json:"diffID"`
	Size   int64   `json:"size"`
}

func bigLayerFiles(dir string) ([]*fileLayer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	bb, err := busyboxLayer()
	if err != nil {
		return nil, err
	}
	layers := make([]*fileLayer, 1+bigLayers)
	var g errgroup.Group
	g.Go(func() (err error) {
		// Named after its content, which depends on the host's busybox.
		name := "busybox-" + bb.diffID.Hex[:16]
		layers[0], err = cachedLayerFile(dir, name, func(w io.Writer) error {
			rc, err := bb.Uncompressed()
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(w, rc)
			return err
		})
		return err
	})
	for i := 1; i <= bigLayers; i++ {
		g.Go(func() (err error) {
			name := fmt.Sprintf("big-%s-%d", bigVersion, i)
			layers[i], err = cachedLayerFile(dir, name, func(w io.Writer) error {
				return writeTar(w, bigEntries(i))
			})
			return err
		})
	}
	return layers, g.Wait()
}

// bigEntries returns the entries of big layer i: data/layer<i>/blob01..10
// filled from a ChaCha8 stream seeded with i.
func bigEntries(i int) []entry {
	var seed [32]byte
	copy(seed[:], fmt.Sprintf("pier-e2e-big-layer-%d", i))
	rng := rand.NewChaCha8(seed)
	dir := fmt.Sprintf("data/layer%d", i)
	entries := []entry{dirEntry("data", 0o755), dirEntry(dir, 0o755)}
	for f := 1; f <= bigFiles; f++ {
		entries = append(entries, streamEntry(fmt.Sprintf("%s/blob%02d", dir, f), 0o644, bigFileSize, rng))
	}
	return entries
}

// cachedLayerFile returns the gzip layer dir/name.tar.gz, first writing it
// from the tar stream that build writes unless it and its sidecar
// dir/name.json are present and agree.
func cachedLayerFile(dir, name string, build func(io.Writer) error) (*fileLayer, error) {
	path := filepath.Join(dir, name+".tar.gz")
	infoPath := filepath.Join(dir, name+".json")
	var info layerInfo
	if b, err := os.ReadFile(infoPath); err == nil && json.Unmarshal(b, &info) == nil {
		if fi, err := os.Stat(path); err == nil && fi.Size() == info.Size {
			return openLayerFile(path, info), nil
		}
	}

	digest, diffID := sha256.New(), sha256.New()
	err := writeFileAtomic(path, func(w io.Writer) error {
		zw, err := gzip.NewWriterLevel(io.MultiWriter(w, digest), gzip.DefaultCompression)
		if err != nil {
			return err
		}
		if err := build(io.MultiWriter(zw, diffID)); err != nil {
			return fmt.Errorf("build %s: %w", path, err)
		}
		return zw.Close()
	})
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	info = layerInfo{Digest: hashOf(digest), DiffID: hashOf(diffID), Size: fi.Size()}
	err = writeFileAtomic(infoPath, func(w io.Writer) error { return json.NewEncoder(w).Encode(info) })
	if err != nil {
		return nil, err
	}
	return openLayerFile(path, info), nil
}

// openLayerFile returns the layer of the gzip file at path described by info.
func openLayerFile(path string, info layerInfo) *fileLayer {
	open := func() (io.ReadCloser, error) { return os.Open(path) }
	return &fileLayer{path: path, layer: &layer{
		digest:     info.Digest,
		diffID:     info.DiffID,
		size:       info.Size,
		mediaType:  types.DockerLayer,
		compressed: open,
		uncompressed: func() (io.ReadCloser, error) {
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			zr, err := gzip.NewReader(bufio.NewReader(f))
			if err != nil {
				f.Close()
				return nil, err
			}
			return readCloser{zr, f}, nil
		},
	}}
}

// readCloser reads from a Reader and closes a Closer.
type readCloser struct {
	io.Reader
	io.Closer
}

// writeFileAtomic creates path (mode 0644) with what write writes, through
// a temporary file and a rename.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	bw := bufio.NewWriterSize(f, 1<<20)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Chmod(0o644)
	}
	if closeErr := f.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
