package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// TestRegistryChaos pulls through a registry that stalls, truncates,
// corrupts, fails with 5xx and 429, and loops redirects. Each pull ends
// with a clear error (or succeeds after retries), leaves no partial layer,
// and a clean pull works afterwards. Concurrent pulls share one download,
// and the first client's leaving does not cancel it for the other.
func TestRegistryChaos(t *testing.T) {
	p := startPierd(t, "[image]\npull_progress_timeout = \"3s\"\n")
	r, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	img := mustImage(t, testenv.Busybox)
	if _, err := r.Push("e2e/chaos:1", img); err != nil {
		t.Fatal(err)
	}
	ref := r.Ref("e2e/chaos:1")
	layers, _ := img.Layers()
	layer, _ := layers[0].Digest()
	config, _ := img.ConfigName()

	for _, tc := range []struct {
		name   string
		faults []*testenv.Fault
		code   codes.Code // OK: the pull succeeds after retries
		want   []string   // in the error
	}{
		{"stall", []*testenv.Fault{{Kind: testenv.Stall, Path: layer.Hex, AfterBytes: 50_000}},
			codes.Unavailable, []string{"sent nothing for 3s", "image_pull_progress_timeout", layer.String(), r.Host()}},
		{"truncated", []*testenv.Fault{{Kind: testenv.Truncate, Path: layer.Hex, AfterBytes: 50_000}},
			codes.Unavailable, []string{"broke off", layer.String()}},
		{"wrong layer digest", []*testenv.Fault{{Kind: testenv.WrongDigest, Path: layer.Hex}},
			codes.DataLoss, []string{layer.String(), "checksum"}},
		{"wrong config digest", []*testenv.Fault{{Kind: testenv.WrongDigest, Path: config.Hex}},
			codes.DataLoss, []string{"image config", r.Host()}},
		{"500 then 503 then success", []*testenv.Fault{{Kind: testenv.Status, Path: "/manifests/", Status: 500, Times: 1}, {Kind: testenv.Status, Path: "/blobs/", Status: 503, Times: 1}},
			codes.OK, nil},
		{"429 with Retry-After then success", []*testenv.Fault{{Kind: testenv.Status, Path: layer.Hex, Status: 429, RetryAfter: 1, Times: 2}},
			codes.OK, nil},
		{"503 for good", []*testenv.Fault{{Kind: testenv.Status, Path: "/manifests/", Status: 503}},
			codes.Unavailable, []string{"503", "after 4 attempts", r.Host()}},
		{"redirect loop", []*testenv.Fault{{Kind: testenv.RedirectLoop, Path: layer.Hex}},
			codes.Unavailable, []string{"redirect", r.Host()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, f := range tc.faults {
				r.AddFault(f)
			}
			start := time.Now()
			_, err := pull(t, p, ref, nil)
			t.Logf("%s: %v after %v", tc.name, err, time.Since(start).Round(10*time.Millisecond))
			if status.Code(err) != tc.code {
				t.Errorf("code %v, want %v: %v", status.Code(err), tc.code, err)
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q: %v", w, err)
				}
			}
			for _, f := range tc.faults {
				if r.Hits(f) == 0 {
					t.Errorf("fault %+v never hit", *f)
				}
			}
			assertNoPartialLayer(t, p)
			r.ClearFaults()
			mustPull(t, p, ref)
			if _, err := p.Images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
				t.Fatal(err)
			}
		})
	}

	t.Run("shared download outlives its first client", func(t *testing.T) {
		before := r.Requests("/blobs/" + layer.String())
		stall := &testenv.Fault{Kind: testenv.Stall, Path: layer.Hex, AfterBytes: 50_000, Times: 1, Delay: 2 * time.Second}
		r.AddFault(stall)
		defer r.ClearFaults()
		first, cancel := context.WithCancel(ctx(t))
		var wg sync.WaitGroup
		var firstErr, secondErr error
		wg.Go(func() {
			_, firstErr = p.Images.PullImage(first, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		})
		for r.Hits(stall) == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		wg.Go(func() { _, secondErr = pull(t, p, ref, nil) })
		for !strings.Contains(p.LogText(), "Joining a pull under way") {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		wg.Wait()
		if status.Code(firstErr) != codes.Canceled || secondErr != nil {
			t.Fatalf("first client: %v; second: %v", firstErr, secondErr)
		}
		if n := r.Requests("/blobs/"+layer.String()) - before; n != 1 {
			t.Fatalf("layer downloaded %d times", n)
		}
		assertNoPartialLayer(t, p)
	})
}

// assertNoPartialLayer fails if pierd's store holds a half-written layer
// or image: a dot-name, or a layer directory without its record.
func assertNoPartialLayer(t *testing.T, p *testenv.Pierd) {
	t.Helper()
	for _, e := range storeEntries(t, p) {
		if strings.HasPrefix(filepath.Base(e), ".") {
			t.Errorf("left behind: %s", e)
		} else if strings.HasPrefix(e, "layers/") {
			if _, err := os.Stat(filepath.Join(p.Root(), e, "layer.json")); err != nil {
				t.Errorf("layer without a record: %s", e)
			}
		}
	}
}
