package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// bigImage pushes the ~200 MB benchmark image to a registry of its own.
func bigImage(t *testing.T) *testenv.Registry {
	t.Helper()
	img, err := testenv.Big(testenv.BigCacheDir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if _, err := r.Push("bench/big:1", img); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestKilledDuringPull kills pierd while it unpacks layers: the half
// layers are never used, the next start removes them, and the next pull
// completes the image. Progress is logged while the pull runs.
func TestKilledDuringPull(t *testing.T) {
	r := bigImage(t)
	p := startPierd(t, "[image]\nprogress_interval = \"20ms\"\nmax_concurrent_downloads = 2\n")
	ref := r.Ref("bench/big:1")
	layers := filepath.Join(p.Root(), "layers")
	go p.Images.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	deadline := time.Now().Add(30 * time.Second)
	for !hasTemp(layers) {
		if time.Now().After(deadline) {
			t.Fatal("no layer was being unpacked")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if !hasTemp(layers) {
		t.Fatal("the killed pull left no partial layer: the test proves nothing")
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if hasTemp(layers) {
		t.Fatal("partial layers survived a restart")
	}
	if s := imageStatus(t, p, ref); s.Image != nil {
		t.Fatalf("an interrupted pull recorded the image: %v", s.Image)
	}
	mustPull(t, p, ref)
	dirs := layerDirs(t, p, ref)
	if len(dirs) != 5 {
		t.Fatalf("%d layers, want 5", len(dirs))
	}
	for i, d := range dirs[1:] {
		files, err := filepath.Glob(filepath.Join(d, "data", "*", "*"))
		if err != nil || len(files) != 10 {
			t.Fatalf("layer %d: %d files (%v), want 10", i+1, len(files), err)
		}
		for _, f := range files {
			if fi, err := os.Stat(f); err != nil || fi.Size() != 5<<20 {
				t.Fatalf("%s: %v %v", f, fi, err)
			}
		}
	}
	if !strings.Contains(p.LogText(), `"Pulling image" image="`+ref+`" progress=`) {
		t.Error("no progress was logged")
	}
}

func hasTemp(dir string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			return true
		}
	}
	return false
}
