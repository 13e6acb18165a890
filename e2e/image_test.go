package e2e

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// TestCrictlImageLifecycle drives pull, images, inspecti, imagefsinfo and
// rmi through crictl, and checks the basic RuntimeService answers.
func TestCrictlImageLifecycle(t *testing.T) {
	p := startPierd(t, "")
	ref := reg.Ref(busyboxImg)

	out, err := p.Crictl("version")
	if err != nil || !strings.Contains(out, "RuntimeName:  pier") || !strings.Contains(out, "RuntimeApiVersion:  v1") {
		t.Fatalf("crictl version: %v %s", err, out)
	}
	if out, err = p.Crictl("info"); err != nil || !strings.Contains(out, `"RuntimeReady"`) || strings.Contains(out, "NetworkPluginNotReady") {
		t.Fatalf("crictl info: %v %s", err, out)
	}
	if _, err := p.Crictl("pull", ref); err != nil {
		t.Fatal(err)
	}
	if out, err = p.Crictl("images"); err != nil || !strings.Contains(out, reg.Ref("e2e/busybox")) {
		t.Fatalf("crictl images: %v\n%s", err, out)
	}
	out, err = p.Crictl("inspecti", "-o", "json", ref)
	if err != nil {
		t.Fatal(err)
	}
	var inspect struct {
		Info struct {
			Layers []struct{ ChainID, DiffID, Digest string }
			Config struct{ Config struct{ Cmd []string } }
		}
	}
	if err := json.Unmarshal([]byte(out), &inspect); err != nil {
		t.Fatalf("inspecti: %v\n%s", err, out)
	}
	if len(inspect.Info.Layers) != 1 || inspect.Info.Layers[0].ChainID == "" || !slices.Equal(inspect.Info.Config.Config.Cmd, []string{"sh"}) {
		t.Fatalf("inspecti info: %s", out)
	}
	if out, err = p.Crictl("imagefsinfo", "-o", "json"); err != nil || !strings.Contains(out, p.Root()) {
		t.Fatalf("imagefsinfo: %v %s", err, out)
	}
	fs, err := p.Images.ImageFsInfo(ctx(t), &runtimeapi.ImageFsInfoRequest{})
	if err != nil || fs.ImageFilesystems[0].UsedBytes.Value < 1<<20 || fs.ImageFilesystems[0].InodesUsed.Value < 10 {
		t.Fatalf("ImageFsInfo: %v %v", fs, err)
	}
	if _, err := p.Crictl("rmi", ref); err != nil {
		t.Fatal(err)
	}
	if imgs := listImages(t, p); len(imgs) != 0 {
		t.Fatalf("images after rmi: %v", imgs)
	}
	if left := storeEntries(t, p); len(left) != 0 {
		t.Fatalf("store not empty after rmi: %v", left)
	}
	fs, err = p.Images.ImageFsInfo(ctx(t), &runtimeapi.ImageFsInfoRequest{})
	if err != nil || fs.ImageFilesystems[0].UsedBytes.Value != 0 {
		t.Fatalf("ImageFsInfo after rmi: %v %v", fs, err)
	}
}

// TestImageRecords checks tags, digests, user, pinned, filters and status
// of absent images, and that all of it survives a restart.
func TestImageRecords(t *testing.T) {
	p := startPierd(t, `[image]
pinned_images = ["`+reg.Ref(userImg)+`"]`)
	id := mustPull(t, p, reg.Ref(userImg))
	st := imageStatus(t, p, reg.Ref(userImg)).Image
	if st.Id != id || st.GetUid().GetValue() != 1002 || st.Username != "" || !st.Pinned ||
		!slices.Equal(st.RepoTags, []string{reg.Ref(userImg)}) || len(st.RepoDigests) != 1 || !strings.HasPrefix(st.RepoDigests[0], reg.Ref("e2e/user@sha256:")) || st.Size < 1<<20 {
		t.Fatalf("status: %+v", st)
	}
	bb := mustPull(t, p, reg.Ref(busyboxImg))
	if s := imageStatus(t, p, bb).Image; s.Pinned || s.Uid != nil {
		t.Fatalf("busybox: %+v", s)
	}
	// By ID, short ID, digest reference.
	for _, ref := range []string{id, strings.TrimPrefix(id, "sha256:"), strings.TrimPrefix(id, "sha256:")[:12], st.RepoDigests[0]} {
		if s := imageStatus(t, p, ref).Image; s == nil || s.Id != id {
			t.Fatalf("status %s: %v", ref, s)
		}
	}
	// A pull by digest records the digest and no tag.
	byDigest := imageStatus(t, p, bb).Image.RepoDigests[0]
	mustPull(t, p, byDigest)
	if s := imageStatus(t, p, byDigest).Image; s == nil || s.Id != bb {
		t.Fatalf("status by digest %s: %v", byDigest, s)
	}
	if _, err := pull(t, p, reg.Ref("e2e/busybox@sha256:"+strings.Repeat("0", 64)), nil); status.Code(err) != codes.NotFound {
		t.Fatalf("pull of an unknown digest: %v", err)
	}
	if s := imageStatus(t, p, reg.Ref("e2e/absent:1")); s.Image != nil {
		t.Fatalf("absent image has status %v", s.Image)
	}
	resp, err := p.Images.ListImages(ctx(t), &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: reg.Ref(busyboxImg)}}})
	if err != nil || len(resp.Images) != 1 || resp.Images[0].Id != bb {
		t.Fatalf("filtered list: %v %v", resp, err)
	}
	if n := len(listImages(t, p)); n != 2 {
		t.Fatalf("%d images, want 2", n)
	}

	// A second tag of the same image, then a restart.
	if _, err := reg.Push("e2e/user:again", mustImage(t, testenv.User1002)); err != nil {
		t.Fatal(err)
	}
	mustPull(t, p, reg.Ref("e2e/user:again"))
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	st = imageStatus(t, p, id).Image
	if len(st.RepoTags) != 2 || !st.Pinned || len(listImages(t, p)) != 2 {
		t.Fatalf("after restart: %+v", st)
	}
	// Removing by ID removes every tag; removing again is fine.
	for i := 0; i < 2; i++ {
		if _, err := p.Images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: id}}); err != nil {
			t.Fatalf("remove %d: %v", i, err)
		}
	}
	if s := imageStatus(t, p, reg.Ref("e2e/user:again")); s.Image != nil {
		t.Fatalf("tag survived removal: %v", s.Image)
	}
}

// TestSharedLayers: images sharing a layer store it once; removing one
// keeps the layers the other uses.
func TestSharedLayers(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	layers := func() int {
		n := 0
		for _, e := range storeEntries(t, p) {
			if strings.HasPrefix(e, "layers/") {
				n++
			}
		}
		return n
	}
	mustPull(t, p, reg.Ref(whiteoutImg)) // busybox + 2 layers
	if n := layers(); n != 3 {
		t.Fatalf("%d layers, want 3 (busybox shared)", n)
	}
	if _, err := p.Images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: reg.Ref(whiteoutImg)}}); err != nil {
		t.Fatal(err)
	}
	if n := layers(); n != 1 {
		t.Fatalf("%d layers after removing the whiteout image, want busybox's 1", n)
	}
	if s := imageStatus(t, p, reg.Ref(busyboxImg)); s.Image == nil {
		t.Fatal("busybox lost")
	}
}

// layerDirs returns the unpacked directories of an image's layers, lowest first.
func layerDirs(t *testing.T, p *testenv.Pierd, ref string) []string {
	t.Helper()
	var info struct{ Layers []struct{ ChainID string } }
	if err := json.Unmarshal([]byte(imageStatus(t, p, ref).Info["info"]), &info); err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, l := range info.Layers {
		dirs = append(dirs, filepath.Join(p.Root(), "layers", strings.TrimPrefix(l.ChainID, "sha256:"), "fs"))
	}
	return dirs
}

// mountLayers mounts the layers read-only with overlayfs, as a container's
// root file system would see them.
func mountLayers(t *testing.T, dirs []string) string {
	t.Helper()
	target := t.TempDir()
	lower := slices.Clone(dirs)
	slices.Reverse(lower)
	if len(lower) == 1 {
		lower = append(lower, t.TempDir()) // overlayfs wants two lower dirs without an upper
	}
	if err := unix.Mount("overlay", target, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(lower, ":")); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(target, 0); err != nil {
			t.Errorf("unmount %s: %v", target, err)
		}
	})
	return target
}

func TestWhiteoutAndOpaqueDirs(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(whiteoutImg))
	root := mountLayers(t, layerDirs(t, p, reg.Ref(whiteoutImg)))
	for path, want := range map[string]bool{
		"data/keep": true, "data/gone": false, "opaque/new": true, "opaque/old1": false, "opaque/sub": false,
		"bin/busybox": true, "bin/sh": true, "etc/passwd": true,
	} {
		_, err := os.Lstat(filepath.Join(root, path))
		if got := err == nil; got != want {
			t.Errorf("%s exists: %v, want %v", path, got, want)
		}
	}
	// bin/sh is a hard link to busybox, as in the real image.
	a, _ := os.Stat(filepath.Join(root, "bin/sh"))
	b, _ := os.Stat(filepath.Join(root, "bin/busybox"))
	if !os.SameFile(a, b) {
		t.Error("bin/sh is not a hard link to bin/busybox")
	}
}

func TestFormats(t *testing.T) {
	p := startPierd(t, "")
	for ref, marker := range map[string]string{zstdImg: "zstd-marker", plainImg: "plain-marker", multiArchImg: "arch"} {
		mustPull(t, p, reg.Ref(ref))
		dirs := layerDirs(t, p, reg.Ref(ref))
		data, err := os.ReadFile(filepath.Join(dirs[len(dirs)-1], marker))
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		if ref == multiArchImg && string(data) != "amd64" {
			t.Fatalf("multi-arch image: got the %q variant, want amd64", data)
		}
	}
}

func TestOtherPlatformRefused(t *testing.T) {
	p := startPierd(t, "")
	for _, ref := range []string{winIndexImg, winPlainImg} {
		_, err := pull(t, p, reg.Ref(ref), nil)
		want := "image " + reg.Ref(ref) + " is built for windows/amd64 only; this node runs linux/amd64"
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
			t.Errorf("pull %s: %v; want FailedPrecondition %q", ref, err, want)
		}
	}
	if left := storeEntries(t, p); len(left) != 0 {
		t.Fatalf("a refused image left %v", left)
	}
}

func TestBadReferences(t *testing.T) {
	p := startPierd(t, "")
	cases := []struct {
		ref  string
		code codes.Code
		msg  string
	}{
		{"bad ref!!", codes.InvalidArgument, "invalid image reference"},
		{"", codes.InvalidArgument, "empty"},
		{reg.Ref("e2e/nonexistent:1"), codes.NotFound, reg.Ref("e2e/nonexistent:1")},
		{reg.Ref("e2e/busybox:nosuchtag"), codes.NotFound, reg.Ref("e2e/busybox:nosuchtag")},
		{"127.0.0.1:1/e2e/busybox:1", codes.Unavailable, "registry 127.0.0.1:1 unreachable"},
	}
	for _, c := range cases {
		_, err := pull(t, p, c.ref, nil)
		if status.Code(err) != c.code || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("pull %q: %v; want %v containing %q", c.ref, err, c.code, c.msg)
		}
	}
	for _, rpc := range []func() error{
		func() error {
			_, err := p.Images.ImageStatus(ctx(t), &runtimeapi.ImageStatusRequest{})
			return err
		},
		func() error {
			_, err := p.Images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{})
			return err
		},
	} {
		if err := rpc(); status.Code(err) != codes.InvalidArgument {
			t.Errorf("empty request: %v, want InvalidArgument", err)
		}
	}
	// An RPC pier does not serve (pod checkpoints, alpha in cri-api 0.37)
	// answers Unimplemented.
	if _, err := p.Runtime.CheckpointPod(ctx(t), &runtimeapi.CheckpointPodRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("CheckpointPod: %v, want Unimplemented", err)
	}
}

func TestMirrors(t *testing.T) {
	// localhost:1 does not exist: its first mirror refuses connections, the
	// second is the test registry.
	p := startPierd(t, `[registries."localhost:1"]
mirrors = ["http://127.0.0.1:1", "http://`+reg.Host()+`"]`)
	id := mustPull(t, p, "localhost:1/"+busyboxImg)
	if s := imageStatus(t, p, "localhost:1/"+busyboxImg).Image; s == nil || s.Id != id || s.RepoTags[0] != "localhost:1/"+busyboxImg {
		t.Fatalf("mirrored image: %v", s)
	}
	_, err := pull(t, p, "localhost:1/e2e/nonexistent:1", nil)
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "127.0.0.1:1") || !strings.Contains(err.Error(), reg.Host()) {
		t.Fatalf("pull of a missing image through mirrors: %v", err)
	}
}

func TestCorruptBlobIsNotKept(t *testing.T) {
	p := startPierd(t, "")
	img := mustImage(t, testenv.Whiteout)
	layers, _ := img.Layers()
	top, _ := layers[len(layers)-1].Digest()
	r, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Push("e2e/corrupt:1", img); err != nil {
		t.Fatal(err)
	}
	r.CorruptBlob(top)
	_, err = pull(t, p, r.Ref("e2e/corrupt:1"), nil)
	if status.Code(err) != codes.DataLoss || !strings.Contains(err.Error(), top.String()) {
		t.Fatalf("pull of a corrupt blob: %v", err)
	}
	for _, e := range storeEntries(t, p) {
		if strings.Contains(e, top.Hex[:12]) || strings.HasPrefix(filepath.Base(e), ".") || strings.HasPrefix(e, "images/") {
			t.Errorf("left behind: %s", e)
		}
	}
}

func TestDroppedConnectionThenRetry(t *testing.T) {
	p := startPierd(t, "")
	img := mustImage(t, testenv.Busybox)
	layers, _ := img.Layers()
	d, _ := layers[0].Digest()
	r, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Push("e2e/drop:1", img); err != nil {
		t.Fatal(err)
	}
	r.DropBlob(d, 100_000, 10) // more than the client's own retries
	_, err = pull(t, p, r.Ref("e2e/drop:1"), nil)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), "broke off") {
		t.Fatalf("pull through a dropped connection: %v", err)
	}
	r.DropBlob(d, 0, 0)
	mustPull(t, p, r.Ref("e2e/drop:1"))
}

func TestConcurrentPullsShareWork(t *testing.T) {
	p := startPierd(t, "")
	r, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	bb, wo := mustImage(t, testenv.Busybox), mustImage(t, testenv.Whiteout)
	r.Push("e2e/a:1", bb)
	r.Push("e2e/b:1", bb)
	r.Push("e2e/c:1", wo)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, ref := range []string{"e2e/a:1", "e2e/a:1", "e2e/b:1", "e2e/c:1"} {
		wg.Go(func() {
			_, err := pull(t, p, r.Ref(ref), nil)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	layers, _ := wo.Layers()
	for _, l := range layers {
		d, _ := l.Digest()
		if n := r.Requests("/blobs/" + d.String()); n != 1 {
			t.Errorf("blob %s downloaded %d times, want once", d, n)
		}
	}
}

func TestMaliciousLayers(t *testing.T) {
	p := startPierd(t, "")
	hostname, _ := os.ReadFile("/etc/hostname")
	for _, path := range testenv.EscapePaths {
		os.Remove(path)
	}
	evil, err := testenv.Malicious()
	if err != nil {
		t.Fatal(err)
	}
	for name := range evil {
		_, err := pull(t, p, reg.Ref(evilRepo+":"+name), nil)
		t.Logf("%s: %v", name, err)
	}
	for _, path := range testenv.EscapePaths {
		if _, err := os.Lstat(path); err == nil {
			os.Remove(path)
			t.Errorf("a layer wrote %s outside its directory", path)
		}
	}
	if now, _ := os.ReadFile("/etc/hostname"); !bytes.Equal(now, hostname) {
		t.Fatalf("/etc/hostname changed: %q", now)
	}
	// What was accepted stays inside the layer: setuid bits and devices
	// are the image's business, confined to its directory.
	if dirs := layerDirs(t, p, reg.Ref(evilRepo+":setuid")); len(dirs) == 1 {
		fi, err := os.Stat(filepath.Join(dirs[0], "bin/suid"))
		if err != nil || fi.Mode()&os.ModeSetuid == 0 {
			t.Errorf("setuid bit of an image file not kept: %v %v", fi, err)
		}
	}
	for _, e := range storeEntries(t, p) {
		if strings.HasPrefix(filepath.Base(e), ".") {
			t.Errorf("left behind: %s", e)
		}
	}
}

func TestAuth(t *testing.T) {
	creds := &testenv.Auth{Username: "e2e-user", Password: "s3cret-pass", IdentityToken: "e2e-identity-token", RegistryToken: "e2e-registry-token"}
	r, err := testenv.StartRegistry(testenv.RegistryOptions{Auth: creds})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Push("private/busybox:1", mustImage(t, testenv.Busybox)); err != nil {
		t.Fatal(err)
	}
	// docker config.json fallback for requests without credentials.
	dockerDir := t.TempDir()
	os.WriteFile(filepath.Join(dockerDir, "config.json"), []byte(`{"auths":{"`+r.Host()+`":{"auth":"ZTJlLXVzZXI6czNjcmV0LXBhc3M="}}}`), 0o600)
	p := startPierd(t, "", "DOCKER_CONFIG="+dockerDir)
	ref := r.Ref("private/busybox:1")
	for name, auth := range map[string]*runtimeapi.AuthConfig{
		"username/password": {Username: creds.Username, Password: creds.Password},
		"auth":              {Auth: "ZTJlLXVzZXI6czNjcmV0LXBhc3M="}, // base64 e2e-user:s3cret-pass
		"identity token":    {IdentityToken: creds.IdentityToken},
		"registry token":    {RegistryToken: creds.RegistryToken},
		"docker config":     nil,
	} {
		if _, err := pull(t, p, ref, auth); err != nil {
			t.Errorf("pull with %s: %v", name, err)
		}
		if _, err := p.Images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err = pull(t, p, ref, &runtimeapi.AuthConfig{Username: creds.Username, Password: "wrong-secret-value"})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "unauthorized") || strings.Contains(err.Error(), "wrong-secret-value") {
		t.Fatalf("wrong password: %v", err)
	}
	if log := p.LogText(); strings.Contains(log, "wrong-secret-value") || strings.Contains(log, creds.Password) || strings.Contains(log, creds.IdentityToken) {
		t.Fatal("pierd logged a credential")
	}
}

// TestTLSRegistry: a registry with a certificate pier cannot verify is
// refused, unless it is configured skip_verify.
func TestTLSRegistry(t *testing.T) {
	srv := httptest.NewTLSServer(reg)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	ref := host + "/" + busyboxImg
	if _, err := pull(t, startPierd(t, ""), ref, nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("pull from an unverifiable registry: %v", err)
	}
	mustPull(t, startPierd(t, "[registries.\""+host+"\"]\nskip_verify = true\n"), ref)
}

func TestRuntimeBasics(t *testing.T) {
	// Left empty, the cgroup driver is systemd only where systemd is PID 1.
	p := startPierd(t, "")
	fi, err := os.Stat(p.Socket)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket: %v %v", fi.Mode(), err)
	}
	want := runtimeapi.CgroupDriver_CGROUPFS
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		want = runtimeapi.CgroupDriver_SYSTEMD
	}
	rc, err := p.Runtime.RuntimeConfig(ctx(t), &runtimeapi.RuntimeConfigRequest{})
	if err != nil || rc.Linux.CgroupDriver != want {
		t.Fatalf("RuntimeConfig: %v %v, want %v", rc, err, want)
	}
	if want == runtimeapi.CgroupDriver_CGROUPFS {
		// Asked for systemd where there is none, pierd refuses to start.
		_, err := testenv.StartPierd(testenv.PierdOptions{Binary: pierdBin, Dir: t.TempDir(), Config: "cgroup_driver = \"systemd\"\n"})
		if err == nil || !strings.Contains(err.Error(), "systemd is not PID 1") {
			t.Fatalf("pierd with the systemd driver on a node without systemd: %v", err)
		}
	}
	if _, err := p.Runtime.UpdateRuntimeConfig(ctx(t), &runtimeapi.UpdateRuntimeConfigRequest{RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.88.0.0/16"}}}); err != nil {
		t.Fatal(err)
	}
}
