package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
	"github.com/pier-runtime/pier/platform"
)

// Foreign-platform test images, pushed by pushForeign: Debian's
// busybox-static for arm64 alone, and an index of it and the native busybox
// under one tag.
const (
	arm64Img      = "e2e/arm64-busybox:1"
	multiBusybox  = "e2e/busybox-multi:1"
	platformLabel = "io.pier.image.platform"
	armHandler    = `
[runtimes.arm]
path = "runc"
platform = "linux/arm64"
`
	emulateArm64 = `
[platforms]
emulated = ["linux/arm64"]
`
)

var pushForeignOnce = sync.OnceValue(func() error {
	img, err := testenv.Arm64Busybox()
	if err != nil {
		return err
	}
	if _, err := reg.Push(arm64Img, img); err != nil {
		return err
	}
	idx, err := testenv.BusyboxIndex()
	if err != nil {
		return err
	}
	_, err = reg.PushIndex(multiBusybox, idx)
	return err
})

// foreignTest skips t where the foreign-platform tests cannot run (not an
// amd64 node, or `make test-deps` not run), checks that no other
// registration for aarch64 would change what pier finds, and pushes the
// test images.
func foreignTest(t *testing.T) {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skip("the foreign-platform tests emulate arm64 on an amd64 node")
	}
	testenv.SkipUnlessForeign(t)
	for _, e := range platform.Scan(platform.BinfmtDir) {
		if e.Platform.Architecture == "arm64" {
			t.Fatalf("binfmt_misc already has %s for linux/arm64 (interpreter %s, flags %q): the tests need none but their own; remove it for them (echo -1 > %s)",
				e.Name, e.Interpreter, e.Flags, filepath.Join(platform.BinfmtDir, e.Name))
		}
	}
	if err := pushForeignOnce(); err != nil {
		t.Fatalf("push the foreign-platform images: %v", err)
	}
}

// hostRelease is the host kernel's release, as uname -r prints it.
func hostRelease(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// The tests register qemu-aarch64 with flags PF, as Debian's packages do
// (with F alone, Debian's QEMU loses argv[0], and a busybox applet that
// the shell starts runs as sh), or with P alone where F must be missing.

// TestForeignNodeWide: with [platforms] emulated = ["linux/arm64"] and
// qemu-aarch64 registered with flag F, an arm64-only image pulls and runs
// through crictl, on the host's kernel; with ["auto"] it pulls too.
func TestForeignNodeWide(t *testing.T) {
	foreignTest(t)
	testenv.RegisterEmulator(t, "aarch64", "PF")
	p := startPierd(t, emulateArm64)
	ref := reg.Ref(arm64Img)
	if out, err := p.Crictl("pull", ref); err != nil {
		t.Fatalf("crictl pull %s: %v %s", ref, err, out)
	}
	dir := t.TempDir()
	podJSON, ctrJSON := filepath.Join(dir, "pod.json"), filepath.Join(dir, "ctr.json")
	os.WriteFile(podJSON, []byte(`{"metadata":{"name":"arm64-crictl","namespace":"e2e","uid":"uid-arm64-crictl"},"log_directory":"`+dir+`","linux":{"cgroup_parent":"/pier-e2e"}}`), 0o644)
	os.WriteFile(ctrJSON, []byte(`{"metadata":{"name":"uname"},"image":{"image":"`+ref+`"},"command":["sh","-c","uname -m; uname -r"],"log_path":"uname.log","linux":{}}`), 0o644)
	out, err := p.Crictl("run", ctrJSON, podJSON)
	if err != nil {
		t.Fatalf("crictl run: %v %s", err, out)
	}
	id := strings.TrimSpace(out)
	st := waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_EXITED)
	out, err = p.Crictl("logs", id)
	if want := "aarch64\n" + hostRelease(t) + "\n"; err != nil || st.ExitCode != 0 || out != want {
		t.Errorf("uname -m; uname -r in the arm64 container: exit %d, %q %v; want %q", st.ExitCode, out, err, want)
	}
	imgs := listImages(t, p)
	if len(imgs) != 1 || imgs[0].GetSpec().GetAnnotations()[platformLabel] != "linux/arm64" {
		t.Errorf("ListImages: %v; want the one image, annotated %s=linux/arm64", imgs, platformLabel)
	}

	// "auto" takes every usable registration.
	auto := startPierd(t, "[platforms]\nemulated = [\"auto\"]\n")
	mustPull(t, auto, ref)
}

// TestForeignPerHandler: a handler with platform = "linux/arm64" pulls the
// arm64 variant of a multi-arch image, the default handler the native one;
// both are on the node at once and each handler's pods run theirs.
func TestForeignPerHandler(t *testing.T) {
	foreignTest(t)
	testenv.RegisterEmulator(t, "aarch64", "PF")
	p := startPierd(t, armHandler)
	ref := reg.Ref(multiBusybox)
	ids := map[string]string{}
	for _, h := range []string{"", "arm"} {
		resp, err := p.Images.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref, RuntimeHandler: h}})
		if err != nil {
			t.Fatalf("pull %s for handler %q: %v", ref, h, err)
		}
		ids[h] = resp.ImageRef
	}
	if ids[""] == ids["arm"] {
		t.Fatalf("the default handler and arm pulled the same image %s", ids[""])
	}
	platforms := map[string]string{}
	for _, img := range listImages(t, p) {
		if slices.Contains(img.RepoTags, ref) {
			platforms[img.Id] = img.GetSpec().GetAnnotations()[platformLabel]
		}
	}
	if len(platforms) != 2 || platforms[ids[""]] != "linux/amd64" || platforms[ids["arm"]] != "linux/arm64" {
		t.Errorf("ListImages for %s: %v (image: platform); want %s: linux/amd64 and %s: linux/arm64", ref, platforms, ids[""], ids["arm"])
	}

	for h, want := range map[string]string{"": runtimeArch(), "arm": "aarch64"} {
		name := "multi-" + h
		if h == "" {
			name = "multi-default"
		}
		cfg := podConfig(name)
		cfg.LogDirectory = t.TempDir()
		resp, err := p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg, RuntimeHandler: h})
		if err != nil {
			t.Fatalf("RunPodSandbox with handler %q: %v", h, err)
		}
		// As kubelet does: the image pulled for the pod's handler, by ID.
		c := containerConfig("uname", "uname", "-m")
		c.Image = &runtimeapi.ImageSpec{Image: ids[h], UserSpecifiedImage: ref, RuntimeHandler: h}
		id := startContainer(t, p, resp.PodSandboxId, cfg, c)
		st := waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_EXITED)
		if out := logText(t, filepath.Join(cfg.LogDirectory, c.LogPath)); st.ExitCode != 0 || out != want+"\n" {
			t.Errorf("handler %q: uname -m printed %q (exit %d), want %q", h, out, st.ExitCode, want)
		}
	}
}

// runtimeArch is uname -m of the node.
func runtimeArch() string {
	if runtime.GOARCH == "amd64" {
		return "x86_64"
	}
	return runtime.GOARCH
}

// TestForeignRefused: an arm64-only image is refused, saying what would
// make it run, when no emulator is registered, when one is but the
// operator chose none, and when the one registered lacks flag F.
func TestForeignRefused(t *testing.T) {
	foreignTest(t)
	ref := reg.Ref(arm64Img)
	refused := func(p *testenv.Pierd, want string) {
		t.Helper()
		_, err := pull(t, p, ref, nil)
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), want) {
			t.Errorf("pull %s: %v; want FailedPrecondition saying %q", ref, err, want)
		}
		if imgs := listImages(t, p); len(imgs) != 0 {
			t.Errorf("a refused pull left %v", imgs)
		}
	}

	// Nothing registered, nothing chosen.
	p := startPierd(t, "")
	refused(p, "register qemu-aarch64 with binfmt_misc (flag F")
	// Registered with F, but not chosen: only an operator's choice runs
	// a foreign image.
	e := testenv.RegisterEmulator(t, "aarch64", "PF")
	refused(p, `add "linux/arm64" to [platforms] emulated`)
	if err := e.Unregister(); err != nil {
		t.Fatal(err)
	}
	// Chosen, but registered without F: the kernel would look for the
	// interpreter inside the container.
	testenv.RegisterEmulator(t, "aarch64", "P")
	p = startPierd(t, emulateArm64)
	refused(p, testenv.EmulatorPrefix+"aarch64 is registered but ignored: registered without flag F")
}

// TestForeignEmulatorGone: an image pulled while its emulator was
// registered cannot start new containers once it is gone: CreateContainer
// fails, naming the registration, rather than with "exec format error".
func TestForeignEmulatorGone(t *testing.T) {
	foreignTest(t)
	e := testenv.RegisterEmulator(t, "aarch64", "PF")
	p := startPierd(t, emulateArm64)
	ref := reg.Ref(arm64Img)
	mustPull(t, p, ref)
	podID, pod := podWithLogs(t, p, "arm64-gone")
	c := containerConfig("before", "uname", "-m")
	c.Image.Image = ref
	id := startContainer(t, p, podID, pod, c)
	if st := waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_EXITED); st.ExitCode != 0 {
		t.Fatalf("the arm64 container exited %d with the emulator registered: %q", st.ExitCode, logText(t, filepath.Join(pod.LogDirectory, c.LogPath)))
	}
	if err := e.Unregister(); err != nil {
		t.Fatal(err)
	}
	c = containerConfig("after", "uname", "-m")
	c.Image.Image = ref
	_, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: c, SandboxConfig: pod})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "register qemu-aarch64") || strings.Contains(err.Error(), "exec format error") {
		t.Errorf("CreateContainer after unregistering the emulator: %v; want FailedPrecondition naming the registration", err)
	}
}

// TestForeignStatus: Status's verbose info lists the native platforms, the
// emulated ones and the registrations ignored for lacking flag F.
func TestForeignStatus(t *testing.T) {
	foreignTest(t)
	type registration struct{ Name, Platform, Flags, Ignored string }
	type info struct {
		Native, Emulated []string
		Handlers         map[string]string
		Emulators        []registration
		EmulatorsIgnored []registration
	}
	platforms := func(p *testenv.Pierd) info {
		t.Helper()
		resp, err := p.Runtime.Status(ctx(t), &runtimeapi.StatusRequest{Verbose: true})
		if err != nil {
			t.Fatal(err)
		}
		var i info
		if err := json.Unmarshal([]byte(resp.Info["platforms"]), &i); err != nil {
			t.Fatalf("Status info[platforms] %q: %v", resp.Info["platforms"], err)
		}
		return i
	}
	name := testenv.EmulatorPrefix + "aarch64"

	e := testenv.RegisterEmulator(t, "aarch64", "PF")
	p := startPierd(t, emulateArm64+armHandler)
	got := platforms(p)
	if !slices.Contains(got.Native, "linux/amd64") || !slices.Equal(got.Emulated, []string{"linux/arm64"}) || got.Handlers["arm"] != "linux/arm64" ||
		len(got.Emulators) != 1 || got.Emulators[0].Name != name || got.Emulators[0].Platform != "linux/arm64" || len(got.EmulatorsIgnored) != 0 {
		t.Errorf("with %s registered with F: %+v", name, got)
	}
	if err := e.Unregister(); err != nil {
		t.Fatal(err)
	}
	testenv.RegisterEmulator(t, "aarch64", "P")
	got = platforms(p)
	if len(got.Emulated) != 0 || len(got.Emulators) != 0 || len(got.EmulatorsIgnored) != 1 ||
		got.EmulatorsIgnored[0].Name != name || !strings.Contains(got.EmulatorsIgnored[0].Ignored, "without flag F") ||
		!strings.Contains(got.Handlers["arm"], "not runnable") {
		t.Errorf("with %s registered without F: %+v", name, got)
	}
}
