// Package e2e tests a real pierd end to end: a registry on loopback with
// locally built test images, pierd started on a temporary root, driven by
// crictl and a Go CRI client. The tests need root.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
	"github.com/pier-runtime/pier/internal/hostlock"
)

var (
	pierdBin string
	reg      *testenv.Registry
	network  *testenv.Network // the CNI network pods of the tests join
)

// Test images, pushed to reg under these paths by TestMain.
const (
	busyboxImg   = "e2e/busybox:1"
	userImg      = "e2e/user:1002"
	whiteoutImg  = "e2e/whiteout:1"
	multiArchImg = "e2e/multiarch:1"
	winIndexImg  = "e2e/windows:index"
	winPlainImg  = "e2e/windows:plain"
	zstdImg      = "e2e/oci:zstd"
	plainImg     = "e2e/oci:plain"
	evilRepo     = "e2e/evil"
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped: the end-to-end tests need root")
		os.Exit(0)
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "pier-e2e-bin-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	// PIER_E2E_RACE=1 builds pierd and pier-shim with the race detector; a
	// test whose pierd or shims report a race fails.
	if pierdBin, err = testenv.BuildPier("..", dir, os.Getenv("PIER_E2E_RACE") != ""); err != nil {
		return 0, err
	}
	// The cni package's tests check the host's network too.
	unlock, err := hostlock.Lock()
	if err != nil {
		return 0, err
	}
	defer unlock()
	if reg, err = testenv.StartRegistry(testenv.RegistryOptions{}); err != nil {
		return 0, err
	}
	defer reg.Close()
	if network, err = testenv.NewNetwork(filepath.Join(dir, "cni"), "piere2e0", "10.99.0.0/16"); err != nil {
		return 0, err
	}
	defer network.Close()
	if err := pushAll(); err != nil {
		return 0, err
	}
	code := m.Run()
	// The test pods' cgroup parent (runc makes parents, kubelet would remove them).
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/pier-e2e")
	for _, d := range append(dirs, "/sys/fs/cgroup/pier-e2e") {
		os.Remove(d)
	}
	return code, nil
}

func pushAll() error {
	for path, build := range map[string]func() (v1.Image, error){
		busyboxImg: testenv.Busybox, userImg: testenv.User1002, whiteoutImg: testenv.Whiteout,
		winPlainImg: testenv.WindowsImage, zstdImg: testenv.OCIZstd, plainImg: testenv.Uncompressed,
	} {
		img, err := build()
		if err == nil {
			_, err = reg.Push(path, img)
		}
		if err != nil {
			return fmt.Errorf("push %s: %w", path, err)
		}
	}
	for path, build := range map[string]func() (v1.ImageIndex, error){multiArchImg: testenv.MultiArch, winIndexImg: testenv.WindowsOnly} {
		idx, err := build()
		if err == nil {
			_, err = reg.PushIndex(path, idx)
		}
		if err != nil {
			return fmt.Errorf("push %s: %w", path, err)
		}
	}
	evil, err := testenv.Malicious()
	if err != nil {
		return err
	}
	for name, img := range evil {
		if _, err := reg.Push(evilRepo+":"+name, img); err != nil {
			return err
		}
	}
	return nil
}

// startPierd starts a pierd on a fresh temporary root with extra config
// TOML (and the test network, unless it has a [cni] table), and stops it
// when the test ends.
func startPierd(t *testing.T, config string, env ...string) *testenv.Pierd {
	t.Helper()
	if !strings.Contains(config, "[cni]") {
		config += "\n" + network.Config()
	}
	p, err := testenv.StartPierd(testenv.PierdOptions{Binary: pierdBin, Dir: t.TempDir(), Config: config, Env: env})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		shimLogs, _ := filepath.Glob(filepath.Join(p.Dir, "state", "containers", "*", "shim", "shim.log"))
		for _, f := range shimLogs {
			b, _ := os.ReadFile(f)
			if bytes.Contains(b, []byte("WARNING: DATA RACE")) {
				t.Errorf("a shim reported a data race:\n%s", b)
			}
			// A failed test keeps what its shims said: the directory
			// goes with the test.
			if t.Failed() && len(bytes.TrimSpace(b)) > 0 {
				t.Logf("%s:\n%s", f, b[max(0, len(b)-4096):])
			}
		}
		if err := p.RemovePods(); err != nil {
			t.Errorf("remove the test's pods: %v", err)
		}
		if err := p.Stop(); err != nil {
			t.Errorf("stop pierd: %v", err)
		}
		if strings.Contains(p.LogText(), "WARNING: DATA RACE") {
			t.Error("pierd reported a data race")
		}
		if t.Failed() {
			t.Logf("pierd log:\n%s", p.LogText())
		}
	})
	return p
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func pull(t *testing.T, p *testenv.Pierd, ref string, auth *runtimeapi.AuthConfig) (string, error) {
	t.Helper()
	resp, err := p.Images.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Auth: auth})
	if err != nil {
		return "", err
	}
	return resp.ImageRef, nil
}

func mustPull(t *testing.T, p *testenv.Pierd, ref string) string {
	t.Helper()
	id, err := pull(t, p, ref, nil)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	return id
}

func imageStatus(t *testing.T, p *testenv.Pierd, ref string) *runtimeapi.ImageStatusResponse {
	t.Helper()
	resp, err := p.Images.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Verbose: true})
	if err != nil {
		t.Fatalf("ImageStatus %s: %v", ref, err)
	}
	return resp
}

func listImages(t *testing.T, p *testenv.Pierd) []*runtimeapi.Image {
	t.Helper()
	resp, err := p.Images.ListImages(ctx(t), &runtimeapi.ListImagesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Images
}

// storeEntries lists the names in pierd's layers and images directories.
func storeEntries(t *testing.T, p *testenv.Pierd) []string {
	t.Helper()
	var names []string
	for _, d := range []string{"layers", "images"} {
		entries, err := os.ReadDir(filepath.Join(p.Root(), d))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			names = append(names, d+"/"+e.Name())
		}
	}
	return names
}
