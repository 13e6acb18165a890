package image

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                        "docker.io/library/busybox:latest",
		"busybox:1.29":                   "docker.io/library/busybox:1.29",
		"registry.k8s.io/pause:3.10":     "registry.k8s.io/pause:3.10",
		"127.0.0.1:5000/a/b":             "127.0.0.1:5000/a/b:latest",
		"quay.io/x@sha256:" + hex64("a"): "quay.io/x@sha256:" + hex64("a"),
	} {
		got, err := normalize(in)
		if err != nil || got.String() != want {
			t.Errorf("normalize(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "busybox:", "x@sha256:bad", "bad ref!!", "a:b:c"} {
		if _, err := normalize(bad); !errors.Is(err, ErrInvalidReference) {
			t.Errorf("normalize(%q): err %v, want ErrInvalidReference", bad, err)
		}
	}
}

func hex64(c string) string { return strings.Repeat(c, 64) }

func TestLayersOfChainIDs(t *testing.T) {
	d1, d2 := v1.Hash{Algorithm: "sha256", Hex: hex64("1")}, v1.Hash{Algorithm: "sha256", Hex: hex64("2")}
	m := &v1.Manifest{Layers: []v1.Descriptor{{MediaType: types.DockerLayer, Digest: d1, Size: 3}, {MediaType: types.OCILayerZStd, Digest: d2, Size: 4}}}
	c := &v1.ConfigFile{RootFS: v1.RootFS{DiffIDs: []v1.Hash{d1, d2}}}
	layers, err := layersOf(m, c)
	if err != nil {
		t.Fatal(err)
	}
	// chain(L1) = diffID(L1); chain(L2) = sha256(chain(L1) + " " + diffID(L2)).
	want, _, _ := v1.SHA256(strings.NewReader(d1.String() + " " + d2.String()))
	if layers[0].ChainID != d1.String() || layers[1].ChainID != want.String() {
		t.Fatalf("chain IDs %s %s", layers[0].ChainID, layers[1].ChainID)
	}
	c.RootFS.DiffIDs = c.RootFS.DiffIDs[:1]
	if _, err := layersOf(m, c); err == nil {
		t.Fatal("diff ID count mismatch accepted")
	}
}

func TestUser(t *testing.T) {
	for user, want := range map[string]string{"": "none", "1002": "uid 1002", "1003:1004": "uid 1003", "www-data": "name www-data", "www-data:1004": "name www-data", "0": "uid 0"} {
		img := &Image{Config: &v1.ConfigFile{Config: v1.Config{User: user}}}
		uid, name := img.User()
		got := "none"
		if uid != nil {
			got = "uid " + strconv.FormatInt(*uid, 10)
		} else if name != "" {
			got = "name " + name
		}
		if got != want {
			t.Errorf("User %q: got %s, want %s", user, got, want)
		}
	}
}

func TestClassify(t *testing.T) {
	ep := endpoint{host: "reg.example:5000"}
	cases := []struct {
		err  error
		kind error
	}{
		{&transport.Error{StatusCode: http.StatusNotFound}, ErrNotFound},
		{&transport.Error{StatusCode: http.StatusBadRequest, Errors: []transport.Diagnostic{{Code: transport.ManifestUnknownErrorCode}}}, ErrNotFound},
		{&transport.Error{StatusCode: http.StatusUnauthorized}, ErrUnauthorized},
		{&transport.Error{StatusCode: http.StatusServiceUnavailable}, ErrUnavailable},
		{&transport.Error{StatusCode: http.StatusTooManyRequests}, ErrUnavailable},
	}
	for _, c := range cases {
		err := classify(c.err, "reg.example:5000/a:1", ep)
		if !errors.Is(err, c.kind) || !strings.Contains(err.Error(), "reg.example:5000") {
			t.Errorf("classify(%v) = %v, want kind %v naming the host", c.err, err, c.kind)
		}
	}
}

func TestPlainHTTP(t *testing.T) {
	r, err := newRegistries(map[string]RegistryConfig{"insecure.example": {Insecure: true}, "m.example": {Mirrors: []string{"http://127.0.0.1:5000", "mirror.example"}}}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{"localhost:5000": true, "127.0.0.1:5000": true, "[::1]:80": true, "insecure.example": true, "10.0.0.1:5000": false, "docker.io": false} {
		if got := r.plainHTTPAllowed(host); got != want {
			t.Errorf("plainHTTPAllowed(%s) = %v", host, got)
		}
	}
	eps := r.endpoints("m.example")
	if len(eps) != 3 || eps[0].host != "127.0.0.1:5000" || !eps[0].plainHTTP || eps[1].host != "mirror.example" || eps[1].plainHTTP || !eps[1].mirror || eps[2].mirror {
		t.Fatalf("endpoints: %+v", eps)
	}
	r, _ = newRegistries(map[string]RegistryConfig{"offline.example": {Mirrors: []string{"http://127.0.0.1:5000"}, MirrorsOnly: true}}, nil, 0)
	if eps := r.endpoints("offline.example"); len(eps) != 1 || eps[0].host != "127.0.0.1:5000" {
		t.Fatalf("mirrors_only endpoints: %+v", eps)
	}
	if _, err := newRegistries(map[string]RegistryConfig{"x": {Mirrors: []string{"ftp://x"}}}, nil, 0); err == nil {
		t.Fatal("bad mirror accepted")
	}
	req, _ := http.NewRequest("GET", "http://10.0.0.1:5000/v2/", nil)
	if _, err := (&httpGuard{next: http.DefaultTransport}).RoundTrip(req); err == nil || !strings.Contains(err.Error(), "insecure") {
		t.Fatalf("plain HTTP to a private address not refused: %v", err)
	}
}

// TestStoreModes: what the store keeps is root's alone, also in a store an
// older pier made with looser modes.
func TestStoreModes(t *testing.T) {
	root := t.TempDir()
	os.Chmod(root, 0o711)
	os.Mkdir(filepath.Join(root, "layers"), 0o755)
	s, err := New(Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	img := &Image{ID: "sha256:" + hex64("c")}
	if err := s.writeNewImage(img, []byte(`{"architecture":"amd64","os":"linux"}`)); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		s.layersDir(): 0o700, s.imagesDir(): 0o700, s.imageDir(img.ID): 0o700,
		filepath.Join(s.imageDir(img.ID), "config.json"): 0o600,
		filepath.Join(s.imageDir(img.ID), "image.json"):  0o600,
	} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode().Perm(), err, want)
		}
	}
}

func TestFailureReason(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("x: %w", ErrNotFound):                                                   "not_found",
		withKind(ErrUnauthorized, errors.New("no")):                                        "unauthorized",
		errors.Join(fmt.Errorf("a: %w", ErrUnavailable), fmt.Errorf("b: %w", ErrNotFound)): "not_found",
		fmt.Errorf("x: %w", context.Canceled):                                              "canceled",
		fmt.Errorf("x: %w", ErrNoSpace):                                                    "no_space",
		fmt.Errorf("x: %w", ErrTooLarge):                                                   "too_large",
		errors.New("surprise"):                                                             "other",
	} {
		if got := FailureReason(err); got != want {
			t.Errorf("%v: %s, want %s", err, got, want)
		}
	}
	if r := FailureReasons(); len(r) != len(failureReasons)+1 || r[len(r)-1] != "other" {
		t.Errorf("FailureReasons: %v", r)
	}
}

// OnPull hears of each pull, failed ones too.
func TestOnPull(t *testing.T) {
	var got []PullStats
	s, err := New(Options{Root: t.TempDir(), OnPull: func(p PullStats) { got = append(got, p) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(context.Background(), "Not/A:Valid:Reference", nil, nodeWide(t)); err == nil {
		t.Fatal("pulled an invalid reference")
	}
	if len(got) != 1 || FailureReason(got[0].Err) != "invalid_reference" || got[0].Bytes != 0 {
		t.Fatalf("OnPull saw %+v", got)
	}
}
