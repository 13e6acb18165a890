package testenv

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func startRegistry(t *testing.T, opts RegistryOptions) *Registry {
	t.Helper()
	r, err := StartRegistry(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// must returns v, panicking (which fails the test) if err is not nil.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func ref(t *testing.T, r *Registry, path string) name.Reference {
	t.Helper()
	return must(name.ParseReference(r.Ref(path), name.Insecure))
}

// pushPull pushes img and checks that pulling it back gives the same digest
// and that its config's diff IDs match its layers' content.
func pushPull(t *testing.T, r *Registry, path string, img v1.Image, opts ...remote.Option) v1.Image {
	t.Helper()
	want := must(r.Push(path, img))
	got := must(remote.Image(ref(t, r, path), opts...))
	if d := must(got.Digest()); d != want {
		t.Fatalf("%s: pulled digest %s, pushed %s", path, d, want)
	}
	checkDiffIDs(t, img)
	return got
}

func checkDiffIDs(t *testing.T, img v1.Image) {
	t.Helper()
	cf := must(img.ConfigFile())
	layers := must(img.Layers())
	if len(cf.RootFS.DiffIDs) != len(layers) {
		t.Fatalf("%d diff IDs for %d layers", len(cf.RootFS.DiffIDs), len(layers))
	}
	for i, l := range layers {
		rc := must(l.Uncompressed())
		h := sha256.New()
		if _, err := io.Copy(h, rc); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != cf.RootFS.DiffIDs[i].String() {
			t.Errorf("layer %d: uncompressed sha256 %s, config diff ID %s", i, got, cf.RootFS.DiffIDs[i])
		}
	}
}

// tarEntries returns the headers of the uncompressed layer l by name.
func tarEntries(t *testing.T, l v1.Layer) map[string]*tar.Header {
	t.Helper()
	rc := must(l.Uncompressed())
	defer rc.Close()
	tr := tar.NewReader(rc)
	m := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return m
		}
		if err != nil {
			t.Fatal(err)
		}
		m[h.Name] = h
	}
}

func TestPushPullImages(t *testing.T) {
	r := startRegistry(t, RegistryOptions{})
	images := map[string]func() (v1.Image, error){
		"busybox": Busybox, "whiteout": Whiteout, "windows": WindowsImage, "user": User1002,
		"ocizstd": OCIZstd, "uncompressed": Uncompressed,
	}
	for path, build := range images {
		img := must(build())
		cf := must(img.ConfigFile())
		if len(cf.Config.Env) == 0 || cf.Config.Env[0] != PathEnv {
			t.Errorf("%s: env %v", path, cf.Config.Env)
		}
		pushPull(t, r, "test/"+path+":1", img)
		// Builds are reproducible.
		if a, b := must(img.Digest()), must(must(build()).Digest()); a != b {
			t.Errorf("%s: digests %s and %s of two builds", path, a, b)
		}
	}
	for path, build := range map[string]func() (v1.ImageIndex, error){"multiarch": MultiArch, "windowsonly": WindowsOnly} {
		idx := must(build())
		want := must(r.PushIndex("test/"+path+":1", idx))
		got := must(remote.Index(ref(t, r, "test/"+path+":1")))
		if d := must(got.Digest()); d != want {
			t.Fatalf("%s: pulled digest %s, pushed %s", path, d, want)
		}
		for _, desc := range must(got.IndexManifest()).Manifests {
			img := must(remote.Image(ref(t, r, "test/"+path+"@"+desc.Digest.String())))
			cf := must(img.ConfigFile())
			if desc.Platform == nil || desc.Platform.OS != cf.OS || desc.Platform.Architecture != cf.Architecture {
				t.Errorf("%s: descriptor platform %v, config %s/%s", path, desc.Platform, cf.OS, cf.Architecture)
			}
		}
	}
	malicious := must(Malicious())
	for _, attack := range []string{"dotdot", "absolute", "symlink-dir", "symlink-relative", "hardlink", "device", "setuid"} {
		img, ok := malicious[attack]
		if !ok {
			t.Fatalf("no %q attack", attack)
		}
		pushPull(t, r, "malicious/"+attack+":1", img)
	}
}

func TestBusyboxLayer(t *testing.T) {
	entries := tarEntries(t, must(BusyboxLayer()))
	for name, want := range map[string]int64{"tmp/": 0o1777, "root/": 0o700, "etc/shadow": 0o640, "bin/busybox": 0o755, "bin/pgrep": 0o755} {
		if h := entries[name]; h == nil || h.Mode != want || h.Uid != 0 || h.ModTime.Unix() != 0 {
			t.Errorf("%s: %+v, want mode %o", name, h, want)
		}
	}
	if h := entries["bin/sh"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "bin/busybox" {
		t.Errorf("bin/sh: %+v, want a hard link to bin/busybox", h)
	}
	if _, dynamic := busyboxBinary(); dynamic && entries["lib64/ld-linux-x86-64.so.2"] == nil {
		t.Error("dynamic busybox without its loader")
	}
}

func TestOCIMediaTypes(t *testing.T) {
	for _, tc := range []struct {
		build  func() (v1.Image, error)
		layers []types.MediaType
	}{
		{OCIZstd, []types.MediaType{types.OCILayer, types.OCILayerZStd}},
		{Uncompressed, []types.MediaType{types.OCIUncompressedLayer}},
	} {
		img := must(tc.build())
		m := must(img.Manifest())
		if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
			t.Errorf("manifest %s, config %s", m.MediaType, m.Config.MediaType)
		}
		for i, l := range m.Layers {
			if l.MediaType != tc.layers[i] {
				t.Errorf("layer %d: %s, want %s", i, l.MediaType, tc.layers[i])
			}
		}
	}
}

func TestWhiteoutAndMalicious(t *testing.T) {
	layers := must(must(Whiteout()).Layers())
	if e := tarEntries(t, layers[2]); e["data/.wh.gone"] == nil || e["opaque/.wh..wh..opq"] == nil || e["opaque/new"] == nil {
		t.Errorf("whiteout layer entries: %v", e)
	}
	malicious := must(Malicious())
	for attack, want := range map[string]string{
		"dotdot": "../../../../../../tmp/pier-escape-dotdot", "absolute": "/tmp/pier-escape-absolute",
		"symlink-dir": "evil/pier-escape-symlink", "symlink-relative": "up/pier-escape-symlink-rel",
		"hardlink": "pwn", "device": "dev/sda", "setuid": "bin/suid",
	} {
		if e := tarEntries(t, must(malicious[attack].Layers())[0]); e[want] == nil {
			t.Errorf("%s: no entry %s in %v", attack, want, e)
		}
	}
	for _, p := range EscapePaths {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s exists before any attack", p)
		}
	}
}

// blobLayer pushes the Whiteout image and returns its last layer's digest and
// a function fetching that blob with ggcr.
func blobLayer(t *testing.T, r *Registry) (v1.Hash, func() error) {
	t.Helper()
	img := must(Whiteout())
	must(r.Push("test/whiteout:1", img))
	layers := must(img.Layers())
	digest := must(layers[len(layers)-1].Digest())
	blob := must(name.NewDigest(r.Ref("test/whiteout@"+digest.String()), name.Insecure))
	fetch := func() error {
		l, err := remote.Layer(blob)
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		defer rc.Close()
		_, err = io.Copy(io.Discard, rc)
		return err
	}
	return digest, fetch
}

func TestCorruptBlob(t *testing.T) {
	r := startRegistry(t, RegistryOptions{})
	digest, fetch := blobLayer(t, r)
	if err := fetch(); err != nil {
		t.Fatal(err)
	}
	r.CorruptBlob(digest)
	err := fetch()
	if err == nil || !strings.Contains(err.Error(), "checksum") {
		t.Fatalf("fetch of corrupted blob: %v, want a checksum error", err)
	}
	if n := r.Requests(digest.Hex); n != 2 {
		t.Errorf("Requests = %d, want 2", n)
	}
}

func TestDropBlob(t *testing.T) {
	r := startRegistry(t, RegistryOptions{})
	digest, fetch := blobLayer(t, r)
	r.DropBlob(digest, 10, 1)
	if err := fetch(); err == nil {
		t.Fatal("first fetch succeeded despite the drop")
	}
	if err := fetch(); err != nil {
		t.Fatalf("second fetch: %v", err)
	}
	if n := r.Requests(digest.Hex); n != 2 {
		t.Errorf("Requests = %d, want 2", n)
	}
}

func TestAuth(t *testing.T) {
	auth := &Auth{Username: "alice", Password: "secret", IdentityToken: "id-token", RegistryToken: "reg-token"}
	r := startRegistry(t, RegistryOptions{Auth: auth})
	img := must(Busybox())
	pushPull(t, r, "auth/busybox:1", img, r.PushOptions()...)

	for name, cfg := range map[string]authn.AuthConfig{
		"password":       {Username: "alice", Password: "secret"},
		"identity token": {IdentityToken: "id-token"},
		"registry token": {RegistryToken: "reg-token"},
	} {
		if _, err := remote.Image(ref(t, r, "auth/busybox:1"), remote.WithAuth(authn.FromConfig(cfg))); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, a := range map[string]authn.Authenticator{
		"wrong password": authn.FromConfig(authn.AuthConfig{Username: "alice", Password: "wrong"}),
		"wrong token":    authn.FromConfig(authn.AuthConfig{IdentityToken: "wrong"}),
		"anonymous":      authn.Anonymous,
	} {
		_, err := remote.Image(ref(t, r, "auth/busybox:1"), remote.WithAuth(a))
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %v, want 401", name, err)
		}
	}

	resp, err := http.Get("http://" + r.Host() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Errors []struct{ Code string } }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer realm=") ||
		len(body.Errors) != 1 || body.Errors[0].Code != "UNAUTHORIZED" {
		t.Errorf("GET /v2/ without auth: %s %v %+v", resp.Status, resp.Header, body)
	}
}

func TestBig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 211 MB image")
	}
	dir := t.TempDir()
	img := must(Big(dir))
	files := must(BigLayerFiles(dir))
	layers := must(img.Layers())
	if len(files) != 5 || len(layers) != 5 {
		t.Fatalf("%d files, %d layers", len(files), len(layers))
	}
	if a, b := must(layers[0].Digest()), must(must(BusyboxLayer()).Digest()); a != b {
		t.Errorf("Big's base layer %s differs from BusyboxLayer %s", a, b)
	}
	var total int64
	for _, l := range layers {
		total += must(l.Size())
	}
	if total < 205e6 || total > 220e6 {
		t.Errorf("Big is %d bytes, want about 211 MB", total)
	}
	// Rebuilt from the cache: same digest.
	if a, b := must(img.Digest()), must(must(Big(dir)).Digest()); a != b {
		t.Errorf("digests %s and %s", a, b)
	}
	r := startRegistry(t, RegistryOptions{})
	pushPull(t, r, "bench/big:1", img)
}
