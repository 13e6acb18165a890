package image

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clog "github.com/containerd/log"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The seeds of these targets are in testdata/fuzz/<target>/ (go test runs
// them as ordinary tests); `go test -run '^$' -fuzz '^FuzzX$' ./image/`
// fuzzes one.

// FuzzNormalize: any string is refused with ErrInvalidReference or
// normalized to a fully qualified reference that normalizes to itself.
func FuzzNormalize(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		named, err := normalize(s)
		if err != nil {
			if !strings.Contains(err.Error(), "invalid image reference") {
				t.Fatalf("normalize(%q): error without its kind: %v", s, err)
			}
			return
		}
		again, err := normalize(named.String())
		if err != nil || again.String() != named.String() {
			t.Fatalf("normalize(%q) = %q, which normalizes to %v, %v", s, named, again, err)
		}
		if !strings.Contains(named.String(), "/") || (!strings.Contains(named.String(), ":") && !strings.Contains(named.String(), "@")) {
			t.Fatalf("normalize(%q) = %q: not fully qualified", s, named)
		}
	})
}

// FuzzPickManifest: any index either gives a manifest for this node's
// platform, or an error; never a panic.
func FuzzPickManifest(f *testing.F) {
	node := nodeWide(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return
		}
		m, err := chooseManifest("fuzz", idx, node)
		if err != nil {
			return
		}
		if have := fromV1(m.Platform); node.Rank(have) < 0 || m.Platform == nil || have.OS == "" {
			t.Fatalf("picked %v for %v", m.Platform, node.Platforms)
		}
	})
}

// FuzzLayersOf: any manifest and config give one layer per diff ID with a
// chain ID each, or an error.
func FuzzLayersOf(f *testing.F) {
	f.Fuzz(func(t *testing.T, rawManifest, rawConfig []byte) {
		m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
		if err != nil {
			return
		}
		c, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
		if err != nil {
			return
		}
		layers, err := layersOf(m, c)
		if err != nil {
			return
		}
		if len(layers) != len(c.RootFS.DiffIDs) {
			t.Fatalf("%d layers for %d diff IDs", len(layers), len(c.RootFS.DiffIDs))
		}
		for i, l := range layers {
			if l.ChainID == "" || (i == 0 && l.ChainID != l.DiffID) {
				t.Fatalf("layer %d: chain ID %q", i, l.ChainID)
			}
		}
	})
}

// FuzzParseConfig: any config either fails to parse or yields a user and
// a platform without a panic.
func FuzzParseConfig(f *testing.F) {
	node := nodeWide(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := v1.ParseConfigFile(bytes.NewReader(raw))
		if err != nil {
			return
		}
		img := &Image{Config: c}
		if uid, name := img.User(); uid != nil && name != "" {
			t.Fatalf("user %q is both uid %d and name %q", c.Config.User, *uid, name)
		}
		node.Rank(configPlatform(c))
	})
}

// FuzzApplyLayer: any bytes, unpacked as a layer (compressed or not), are
// refused or unpacked inside the target directory only, with no whiteout
// file left (they become overlayfs whiteouts).
func FuzzApplyLayer(f *testing.F) {
	// Unpacking warns about odd entries on stderr, which the fuzzing
	// coordinator does not read while it runs: a full pipe would hang it.
	clog.L.Logger.SetOutput(io.Discard)
	// Unpack into memory where there is a tmpfs: a disk busy with other
	// work makes each run wait on its journal.
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		top, err := os.MkdirTemp(base, "pier-fuzz-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(top) })
		target := filepath.Join(top, "layer", "fs")
		if err := os.MkdirAll(target, 0o755); err != nil {
			t.Fatal(err)
		}
		sentinel := filepath.Join(top, "sentinel")
		if err := os.WriteFile(sentinel, []byte("untouched"), 0o644); err != nil {
			t.Fatal(err)
		}
		stream, err := decompress(bytes.NewReader(raw))
		if err != nil {
			return
		}
		defer stream.Close()
		guard := &spaceGuard{layer: "fuzz", dir: top, limit: 16 << 20}
		applyLayer(context.Background(), target, stream, guard) //nolint:errcheck // refusing is fine

		if b, err := os.ReadFile(sentinel); err != nil || string(b) != "untouched" {
			t.Fatalf("the file next to the layer changed: %q, %v", b, err)
		}
		filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Fatalf("walk: %v", err)
			}
			switch rel, _ := filepath.Rel(target, path); {
			case path == top || path == sentinel || path == filepath.Dir(target) || path == target:
			case rel == ".." || strings.HasPrefix(rel, "../"):
				t.Fatalf("written outside the layer: %s", path)
			case strings.HasPrefix(d.Name(), ".wh."):
				t.Fatalf("whiteout file left: %s", rel)
			}
			return nil
		})
	})
}
