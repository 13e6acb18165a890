package image

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pier-runtime/pier/platform"
)

// binfmt_misc registrations as the kernel shows them (see package
// platform's tests).
const (
	aarch64Magic = "7f454c460201010000000000000000000200b700"
	aarch64Mask  = "ffffffffffffff00fffffffffffffffffeffffff"
)

// fakeBinfmt writes registration files into a directory that stands for
// /proc/sys/fs/binfmt_misc.
func fakeBinfmt(t testing.TB, entries map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "status"), []byte("enabled\n"), 0o644)
	for name, body := range entries {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func binfmtEntry(flags, magic string) string {
	return "enabled\ninterpreter /nonexistent/qemu-static\nflags: " + flags + "\noffset 0\nmagic " + magic + "\nmask " + aarch64Mask + "\n"
}

func newPolicy(t testing.TB, c platform.Config, entries map[string]string) *platform.Policy {
	t.Helper()
	p, err := platform.New(c, fakeBinfmt(t, entries))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// nodeWide is what a pod of the default handler may run on a node with
// no emulators and nothing configured: the node's own platforms.
func nodeWide(t testing.TB) platform.Want {
	return newPolicy(t, platform.Config{}, nil).Want("")
}

func skipUnlessAMD64(t testing.TB) {
	if platform.Native().Architecture != "amd64" {
		t.Skip("the expectations are written for an amd64 node")
	}
}

var (
	amd64 = platform.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = platform.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
)

func TestChooseManifest(t *testing.T) {
	skipUnlessAMD64(t)
	desc := func(os, arch, variant string) v1.Descriptor {
		return v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: v1.Hash{Algorithm: "sha256", Hex: hex64("1")},
			Platform: &v1.Platform{OS: os, Architecture: arch, Variant: variant}}
	}
	node := nodeWide(t)
	idx := &v1.IndexManifest{Manifests: []v1.Descriptor{desc("linux", "arm64", "v8"), desc("unknown", "unknown", ""), desc("linux", "amd64", "")}}
	if m, err := chooseManifest("x", idx, node); err != nil || m.Platform.Architecture != "amd64" {
		t.Fatalf("chooseManifest = %v, %v", m.Platform, err)
	}
	arm := newPolicy(t, platform.Config{Handlers: map[string]string{"arm": "linux/arm64"}},
		map[string]string{"qemu-aarch64": binfmtEntry("F", aarch64Magic)}).Want("arm")
	if m, err := chooseManifest("x", &v1.IndexManifest{Manifests: []v1.Descriptor{desc("linux", "amd64", ""), desc("linux", "arm64", "")}}, arm); err != nil || m.Platform.Architecture != "arm64" {
		t.Fatalf("the arm handler did not take arm64 (without variant) over the native variant: %v, %v", m.Platform, err)
	}

	_, err := chooseManifest("example/win:1", &v1.IndexManifest{Manifests: []v1.Descriptor{desc("windows", "amd64", "")}}, node)
	if !errors.Is(err, ErrPlatform) || !strings.Contains(err.Error(), "image example/win:1 is built for windows/amd64 only; this node runs linux/amd64") {
		t.Fatalf("windows-only: %v", err)
	}
	_, err = chooseManifest("m", &v1.IndexManifest{Manifests: []v1.Descriptor{desc("linux", "s390x", ""), desc("linux", "arm", "v7")}}, node)
	if !errors.Is(err, ErrPlatform) || !strings.Contains(err.Error(), "built for linux/arm/v7, linux/s390x; this node runs linux/amd64") {
		t.Fatalf("two platforms: %v", err)
	}
	_, err = chooseManifest("a", &v1.IndexManifest{Manifests: []v1.Descriptor{desc("unknown", "unknown", "")}}, node)
	if !errors.Is(err, ErrPlatform) || !strings.Contains(err.Error(), "names no platform") {
		t.Fatalf("attestations only: %v", err)
	}
}

// platformImage is a one-layer image for p, whose file says which it is.
func platformImage(t testing.TB, p platform.Platform) *testImage {
	l, d := layerTar(t, map[string]string{"etc/arch": p.String() + "\n"})
	return makeImageFor(t, p, [][]byte{l}, []v1.Hash{d})
}

// serveIndex serves imgs as one multi-platform image test/img:<tag>, each
// under the platform its config names, with an attestation entry as
// builders add.
func (r *fakeRegistry) serveIndex(t testing.TB, tag string, imgs ...*testImage) string {
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, img := range imgs {
		var cfg v1.ConfigFile
		if err := json.Unmarshal(img.config, &cfg); err != nil {
			t.Fatal(err)
		}
		d := digestOf(img.manifest)
		r.serve(d.String(), img)
		idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: int64(len(img.manifest)), Digest: d,
			Platform: &v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}})
	}
	idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: 2, Digest: digestOf([]byte("{}")),
		Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"}})
	raw, _ := json.Marshal(idx)
	r.put("/v2/test/img/manifests/"+tag, string(types.OCIImageIndex), raw)
	return r.host() + "/test/img:" + tag
}

// One reference pulled for the default handler and for a handler that
// runs linux/arm64 (emulated) gives two images with the same tag, each
// found for its handler, and removed together by name.
func TestMultiPlatformStore(t *testing.T) {
	skipUnlessAMD64(t)
	ctx := context.Background()
	policy := newPolicy(t, platform.Config{Handlers: map[string]string{"arm": "linux/arm64"}},
		map[string]string{"qemu-aarch64": binfmtEntry("POCF", aarch64Magic)})
	dflt, arm := policy.Want(""), policy.Want("arm")
	reg := newFakeRegistry(t)
	ref := reg.serveIndex(t, "multi", platformImage(t, amd64), platformImage(t, arm64))
	tag := ref // the registry's host makes it fully qualified already
	s := newTestStore(t, Options{})

	native, err := s.Pull(ctx, ref, nil, dflt)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := s.Pull(ctx, ref, nil, arm)
	if err != nil {
		t.Fatal(err)
	}
	if native.ID == foreign.ID || native.Platform != amd64 || foreign.Platform != arm64 {
		t.Fatalf("pulled %s for %v and %s for %v", native.ID, native.Platform, foreign.ID, foreign.Platform)
	}
	if native.Handler != "" || foreign.Handler != "arm" {
		t.Errorf("handlers %q and %q", native.Handler, foreign.Handler)
	}
	// Pulling either again keeps the tag on both; the arm64 one is the
	// one pulled last.
	for _, w := range []platform.Want{dflt, arm} {
		if _, err := s.Pull(ctx, ref, nil, w); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Store, when string) {
		t.Helper()
		list := s.List()
		if len(list) != 2 {
			t.Fatalf("%s: %d images", when, len(list))
		}
		for _, img := range list {
			if len(img.RepoTags) != 1 || img.RepoTags[0] != tag || len(img.RepoDigests) != 1 {
				t.Errorf("%s: image for %v has tags %v, digests %v", when, img.Platform, img.RepoTags, img.RepoDigests)
			}
		}
		if img, err := s.Find(ref, dflt); err != nil || img.ID != native.ID {
			t.Errorf("%s: Find for the default handler: %v, %v", when, img, err)
		}
		if img, err := s.Find(ref, arm); err != nil || img.ID != foreign.ID || img.Handler != "arm" {
			t.Errorf("%s: Find for the arm handler: %v, %v", when, img, err)
		}
		// By ID, any image, whatever the handler.
		if img, err := s.Find(foreign.ID, dflt); err != nil || img.ID != foreign.ID {
			t.Errorf("%s: Find by ID: %v, %v", when, img, err)
		}
		// The native one, though the arm64 one was pulled last.
		if img, err := s.Get(ref); err != nil || img.ID != native.ID {
			t.Errorf("%s: Get: %v, %v", when, img, err)
		}
		if imgs, err := s.Named(ref); err != nil || len(imgs) != 2 {
			t.Errorf("%s: Named: %d images, %v", when, len(imgs), err)
		}
	}
	check(s, "after the pulls")

	// The record keeps the platform, as a string.
	raw, err := os.ReadFile(filepath.Join(s.imageDir(foreign.ID), "image.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	json.Unmarshal(raw, &rec)
	if rec["platform"] != "linux/arm64" || rec["handler"] != "arm" || rec["version"] != float64(1) {
		t.Errorf("record: %s", raw)
	}
	// Each reload replaces s: two stores must not share a root.
	if s, err = New(Options{Root: s.root}); err != nil {
		t.Fatal(err)
	}
	check(s, "after a reload")

	// A record of an older pier, without a platform, takes its config's.
	delete(rec, "platform")
	raw, _ = json.Marshal(rec)
	if err := os.WriteFile(filepath.Join(s.imageDir(foreign.ID), "image.json"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err = New(Options{Root: s.root}); err != nil {
		t.Fatal(err)
	}
	check(s, "after a reload of an older record")

	// Without the native image, the default handler does not find the
	// arm64 one, and is told why; Get falls back to it.
	if err := s.Remove(native.ID); err != nil {
		t.Fatal(err)
	}
	_, err = s.Find(ref, dflt)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "only for linux/arm64") || !strings.Contains(err.Error(), "pull it for this runtime handler") {
		t.Errorf("Find of a foreign-only name: %v", err)
	}
	if img, err := s.Get(ref); err != nil || img.ID != foreign.ID {
		t.Errorf("Get of a foreign-only name: %v, %v", img, err)
	}

	// Removing by name removes the images of every platform, and their
	// layers.
	if err := s.Remove(ref); err != nil {
		t.Fatal(err)
	}
	if n := len(s.List()); n != 0 {
		t.Fatalf("%d images left after Remove by name", n)
	}
	if u := s.Usage(); u.Bytes != 0 || u.Inodes != 0 {
		t.Errorf("layers left: %+v", u)
	}
	assertNoPartialLayers(t, s)
}

// Pulls for different choices of platforms do not share a download; each
// gets its own variant even when they run at once.
func TestConcurrentPullsPerPlatform(t *testing.T) {
	skipUnlessAMD64(t)
	policy := newPolicy(t, platform.Config{Handlers: map[string]string{"arm": "linux/arm64"}},
		map[string]string{"qemu-aarch64": binfmtEntry("F", aarch64Magic)})
	reg := newFakeRegistry(t)
	nativeImg, armImg := platformImage(t, amd64), platformImage(t, arm64)
	ref := reg.serveIndex(t, "both", nativeImg, armImg)
	block := make(chan struct{})
	for _, img := range []*testImage{nativeImg, armImg} {
		layer := img.layers[0]
		reg.handle(blobPath(digestOf(layer)), func(w http.ResponseWriter, req *http.Request) {
			<-block
			w.Write(layer)
		})
	}
	s := newTestStore(t, Options{})
	type result struct {
		img *Image
		err error
	}
	results := make([]chan result, 2)
	for i, h := range []string{"", "arm"} {
		results[i] = make(chan result, 1)
		go func() {
			img, err := s.Pull(context.Background(), ref, nil, policy.Want(h))
			results[i] <- result{img, err}
		}()
	}
	for !s.flightCount(2) {
		runtime.Gosched()
	}
	close(block)
	a, b := <-results[0], <-results[1]
	if a.err != nil || b.err != nil {
		t.Fatal(a.err, b.err)
	}
	if a.img.Platform != amd64 || b.img.Platform != arm64 {
		t.Fatalf("pulled %v and %v", a.img.Platform, b.img.Platform)
	}
}

// flightCount reports whether n pulls are under way.
func (s *Store) flightCount(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.flights) == n
}

// An image the handler does not run is refused with ErrPlatform and a
// message that says what would make it run.
func TestPullRefusedPlatform(t *testing.T) {
	skipUnlessAMD64(t)
	reg := newFakeRegistry(t)
	single := reg.serve("armonly", platformImage(t, arm64))
	index := reg.serveIndex(t, "armindex", platformImage(t, arm64))
	s := newTestStore(t, Options{})
	usable := newPolicy(t, platform.Config{}, map[string]string{"qemu-aarch64": binfmtEntry("POCF", aarch64Magic)})
	withoutF := newPolicy(t, platform.Config{Emulated: []string{"linux/arm64"}}, map[string]string{"qemu-aarch64": binfmtEntry("P", aarch64Magic)})
	for _, ref := range []string{single, index} {
		_, err := s.Pull(context.Background(), ref, nil, usable.Want(""))
		if !errors.Is(err, ErrPlatform) || FailureReason(err) != "platform" ||
			!strings.Contains(err.Error(), "is built for linux/arm64 only; this node runs linux/amd64") ||
			!strings.Contains(err.Error(), `add "linux/arm64" to [platforms] emulated`) {
			t.Errorf("%s without opt-in: %v", ref, err)
		}
		_, err = s.Pull(context.Background(), ref, nil, withoutF.Want(""))
		if !errors.Is(err, ErrPlatform) || !strings.Contains(err.Error(), "registered without flag F") {
			t.Errorf("%s with an emulator without flag F: %v", ref, err)
		}
	}
	if n := len(s.List()); n != 0 {
		t.Fatalf("%d images stored", n)
	}
	// Opted in node-wide, the same pulls succeed.
	optIn := newPolicy(t, platform.Config{Emulated: []string{"linux/arm64"}}, map[string]string{"qemu-aarch64": binfmtEntry("F", aarch64Magic)})
	for _, ref := range []string{single, index} {
		if img, err := s.Pull(context.Background(), ref, nil, optIn.Want("")); err != nil || img.Platform != arm64 {
			t.Errorf("%s opted in: %v, %v", ref, img, err)
		}
	}
}
