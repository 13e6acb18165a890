package testenv

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/pier-runtime/pier/internal/hostlock"
	"github.com/pier-runtime/pier/platform"
)

func TestArm64BusyboxIndex(t *testing.T) {
	SkipUnlessForeign(t)
	r := startRegistry(t, RegistryOptions{})
	img := pushPull(t, r, "test/arm64:1", must(Arm64Busybox()))
	cf := must(img.ConfigFile())
	if cf.OS != "linux" || cf.Architecture != "arm64" || cf.Variant != "v8" {
		t.Errorf("platform %s/%s/%s", cf.OS, cf.Architecture, cf.Variant)
	}
	layers := must(img.Layers())
	if len(layers) != 1 {
		t.Fatalf("%d layers", len(layers))
	}
	entries := tarEntries(t, layers[0])
	for _, a := range []string{"sh", "uname", "sha256sum", "sleep", "cat"} {
		h := entries["bin/"+a]
		if h == nil || h.Linkname != "bin/busybox" {
			t.Errorf("bin/%s: %+v", a, h)
		}
	}
	if h := entries["bin/busybox"]; h == nil || h.Mode&0o111 == 0 {
		t.Fatalf("bin/busybox: %+v", h)
	}
	f, err := elf.Open(Arm64BusyboxBinary)
	if err != nil {
		t.Fatal(err)
	}
	if f.Machine != elf.EM_AARCH64 {
		t.Errorf("%s is for %v", Arm64BusyboxBinary, f.Machine)
	}
	f.Close()

	want := must(r.PushIndex("test/busybox:multi", must(BusyboxIndex())))
	got := must(remote.Index(ref(t, r, "test/busybox:multi")))
	if d := must(got.Digest()); d != want {
		t.Fatalf("pulled index %s, pushed %s", d, want)
	}
	var platforms []string
	for _, desc := range must(got.IndexManifest()).Manifests {
		platforms = append(platforms, desc.Platform.String())
	}
	if strings.Join(platforms, " ") != "linux/amd64 linux/arm64/v8" {
		t.Errorf("index platforms %v", platforms)
	}
}

// TestRegisterEmulator registers qemu-aarch64-static with and without flag
// F, runs the arm64 busybox through it, and checks that nothing is left.
func TestRegisterEmulator(t *testing.T) {
	SkipUnlessForeign(t)
	if os.Geteuid() != 0 {
		t.Skip("registering with binfmt_misc needs root")
	}
	unlock, err := hostlock.Lock()
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	mountedBefore := BinfmtMounted()
	entry := filepath.Join(platform.BinfmtDir, EmulatorPrefix+"aarch64")

	for _, flags := range []string{"F", ""} {
		e := RegisterEmulator(t, "aarch64", flags)
		b, err := os.ReadFile(entry)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "enabled\ninterpreter "+e.Interpreter+"\nflags: "+flags+"\n") {
			t.Errorf("flags %q: registration reads\n%s", flags, b)
		}
		var found *platform.Emulator
		for _, em := range platform.Scan(platform.BinfmtDir) {
			if em.Name == e.Name {
				found = &em
			}
		}
		if found == nil || found.Platform.String() != "linux/arm64" || found.Usable() != (flags == "F") {
			t.Errorf("flags %q: platform.Scan found %+v", flags, found)
		}
		out, err := exec.Command(Arm64BusyboxBinary, "uname", "-m").CombinedOutput()
		if err != nil || string(out) != "aarch64\n" {
			t.Errorf("flags %q: the arm64 busybox through binfmt_misc: %q %v", flags, out, err)
		}
		if err := e.Unregister(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(entry); !os.IsNotExist(err) {
			t.Errorf("flags %q: %s still there after Unregister: %v", flags, entry, err)
		}
		if BinfmtMounted() != mountedBefore {
			t.Errorf("flags %q: binfmt_misc mounted %v after Unregister, %v before", flags, !mountedBefore, mountedBefore)
		}
		if err := e.Unregister(); err != nil {
			t.Errorf("a second Unregister: %v", err)
		}
	}
	if err := exec.Command(Arm64BusyboxBinary, "true").Run(); err == nil {
		t.Error("the arm64 busybox still runs after Unregister")
	}

	// Another registration for aarch64 is refused, named.
	e := RegisterEmulator(t, "aarch64", "F")
	other := ":pier-e2e-other:M::" + escapeBinfmt(binfmtMagic["aarch64"].magic) + ":" + escapeBinfmt(binfmtMagic["aarch64"].mask) + ":" + e.Interpreter + ":"
	if err := os.WriteFile(filepath.Join(platform.BinfmtDir, "register"), []byte(other), 0); err != nil {
		t.Fatal(err)
	}
	e.Unregister()
	_, err = registerEmulator("aarch64", "F")
	unregisterEntry("pier-e2e-other")
	unmountIfUnused()
	if err == nil || !strings.Contains(err.Error(), "binfmt_misc already has pier-e2e-other for linux/arm64") {
		t.Errorf("with another registration: %v", err)
	}
	if _, err := os.Stat(entry); !os.IsNotExist(err) {
		t.Errorf("%s registered beside another: %v", entry, err)
	}
	if BinfmtMounted() != mountedBefore {
		t.Errorf("binfmt_misc mounted %v at the end, %v before", !mountedBefore, mountedBefore)
	}
}
