package platform

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	aarch64Magic = "7f454c460201010000000000000000000200b700"
	aarch64Mask  = "ffffffffffffff00fffffffffffffffffeffffff"
	armMagic     = "7f454c4601010100000000000000000002002800"
	riscvMagic   = "7f454c460201010000000000000000000200f300"
	x8664Magic   = "7f454c4602010100000000000000000002003e00"
)

// fakeBinfmt writes registration files as the kernel shows them.
func fakeBinfmt(t *testing.T, entries map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "status"), []byte("enabled\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "register"), nil, 0o200)
	for name, body := range entries {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func entry(enabled bool, flags, magic string) string {
	state := "disabled"
	if enabled {
		state = "enabled"
	}
	return state + "\ninterpreter /nonexistent/qemu-static\nflags: " + flags + "\noffset 0\nmagic " + magic + "\nmask " + aarch64Mask + "\n"
}

var (
	amd64 = Platform{OS: "linux", Architecture: "amd64"}
	arm64 = Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	armv7 = Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
)

func skipUnlessAMD64(t *testing.T) {
	if Native().Architecture != "amd64" {
		t.Skip("the expectations are written for an amd64 node")
	}
}

func TestParse(t *testing.T) {
	for in, want := range map[string]string{"linux/arm64": "linux/arm64", "linux/arm64/v8": "linux/arm64", "linux/arm": "linux/arm/v7", "linux/arm/v6": "linux/arm/v6", "linux/riscv64": "linux/riscv64"} {
		p, err := Parse(in)
		if err != nil || p.String() != want {
			t.Errorf("Parse(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, bad := range []string{"", "linux", "linux/", "windows/amd64", "linux/arm/v7/x", "linux/arm/"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if _, err := Parse("windows/amd64"); err == nil || !strings.Contains(err.Error(), "shares the host's kernel") {
		t.Errorf("windows: %v", err)
	}
}

func TestMatches(t *testing.T) {
	if !arm64.Matches(Platform{OS: "linux", Architecture: "arm64"}) || !armv7.Matches(Platform{OS: "linux", Architecture: "arm", Variant: "v6"}) {
		t.Error("compatible variants refused")
	}
	if (Platform{OS: "linux", Architecture: "arm", Variant: "v6"}).Matches(armv7) || amd64.Matches(arm64) {
		t.Error("incompatible platform accepted")
	}
	if !amd64.Matches(Platform{}) {
		t.Error("an image naming no platform runs anywhere")
	}
}

func TestScan(t *testing.T) {
	skipUnlessAMD64(t)
	dir := fakeBinfmt(t, map[string]string{
		"qemu-aarch64": entry(true, "POCF", aarch64Magic),
		"qemu-arm":     entry(true, "OC", armMagic),
		"qemu-riscv64": entry(false, "F", riscvMagic),
		"qemu-x86_64":  entry(true, "F", x8664Magic), // the node's own: left out
		"python3.11":   "enabled\ninterpreter /usr/bin/python3.11\nflags: \nextension .pyc\n",
	})
	got := map[string]Emulator{}
	for _, e := range Scan(dir) {
		got[e.Name] = e
	}
	if len(got) != 3 {
		t.Fatalf("found %v; want aarch64, arm and riscv64", got)
	}
	if e := got["qemu-aarch64"]; !e.Usable() || e.Platform != arm64 || e.Flags != "POCF" {
		t.Errorf("aarch64: %+v", e)
	}
	if e := got["qemu-arm"]; e.Usable() || e.Platform != armv7 || !strings.Contains(e.Ignored, "without flag F") {
		t.Errorf("arm: %+v", e)
	}
	if e := got["qemu-riscv64"]; e.Usable() || !strings.Contains(e.Ignored, "disabled") {
		t.Errorf("riscv64: %+v", e)
	}
	if Scan(filepath.Join(dir, "absent")) != nil {
		t.Error("no binfmt_misc mounted should mean no emulators")
	}
}

func TestWantNodeWide(t *testing.T) {
	skipUnlessAMD64(t)
	dir := fakeBinfmt(t, map[string]string{"qemu-aarch64": entry(true, "POCF", aarch64Magic), "qemu-arm": entry(true, "OC", armMagic)})
	p, err := New(Config{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	w := p.Want("")
	if w.Rank(arm64) >= 0 || w.Rank(amd64) != 0 {
		t.Fatalf("nothing chosen, yet %v", w.Platforms)
	}
	err = w.Refuse("r/img", []Platform{arm64})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `qemu-aarch64 (binfmt_misc) could emulate it`) || !strings.Contains(err.Error(), `add "linux/arm64" to [platforms] emulated`) {
		t.Errorf("refusal with a usable emulator: %v", err)
	}
	if err := w.Refuse("r/img", []Platform{armv7}); !strings.Contains(err.Error(), "qemu-arm is registered but ignored: registered without flag F") {
		t.Errorf("refusal with an emulator without F: %v", err)
	}
	if err := w.Refuse("r/img", []Platform{{OS: "linux", Architecture: "riscv64"}}); !strings.Contains(err.Error(), "register qemu-riscv64 with binfmt_misc (flag F") {
		t.Errorf("refusal without an emulator: %v", err)
	}
	if err := w.Refuse("r/img", []Platform{{OS: "windows", Architecture: "amd64"}}); !strings.Contains(err.Error(), "built for windows/amd64 only; this node runs linux/amd64") {
		t.Errorf("windows: %v", err)
	}

	if err := p.Reconfigure(Config{Emulated: []string{"linux/arm64", "linux/arm"}}); err != nil {
		t.Fatal(err)
	}
	w = p.Want("")
	if w.Rank(arm64) < 1 || w.Rank(armv7) >= 0 {
		t.Errorf("arm64 chosen and usable, arm chosen without F: %v", w.Platforms)
	}
	if i := w.Choose([]Platform{arm64, amd64}); i != 1 {
		t.Errorf("the native variant comes first; chose %d", i)
	}
	if i := w.Choose([]Platform{armv7, arm64}); i != 1 {
		t.Errorf("chose %d", i)
	}
	if err := p.Reconfigure(Config{Emulated: []string{"auto"}}); err != nil {
		t.Fatal(err)
	}
	if w := p.Want(""); w.Rank(arm64) < 0 || w.Rank(armv7) >= 0 {
		t.Errorf("auto: %v", w.Platforms)
	}
	if err := p.Reconfigure(Config{Emulated: []string{"windows/arm64"}}); err == nil {
		t.Error("a windows platform accepted")
	}
}

func TestWantHandler(t *testing.T) {
	skipUnlessAMD64(t)
	dir := fakeBinfmt(t, map[string]string{"qemu-aarch64": entry(true, "F", aarch64Magic)})
	p, err := New(Config{Handlers: map[string]string{"arm": "linux/arm64", "amd": "linux/amd64"}}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if i := p.Want("arm").Choose([]Platform{amd64, arm64}); i != 1 {
		t.Errorf("the arm handler chose %d", i)
	}
	if p.Want("amd").Rank(arm64) >= 0 || p.Want("").Rank(arm64) >= 0 {
		t.Error("other handlers took arm64")
	}
	if err := p.Check("arm", "img", arm64); err != nil {
		t.Error(err)
	}
	if err := p.Check("arm", "img", amd64); err == nil || !strings.Contains(err.Error(), `runtime handler "arm" runs linux/arm64 only: pull the image with that runtime handler`) {
		t.Errorf("native image for the arm handler: %v", err)
	}
	// The registration goes away: creating fails, saying why.
	os.Remove(filepath.Join(dir, "qemu-aarch64"))
	if err := p.Check("arm", "img", arm64); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "register qemu-aarch64 with flag F") {
		t.Errorf("after unregistering: %v", err)
	}
	if err := p.Reconfigure(Config{Handlers: map[string]string{"arm": "linux/arm64"}, Default: "arm"}); err != nil {
		t.Fatal(err)
	}
	if w := p.Want(""); !w.Fixed || w.Handler != "arm" {
		t.Errorf("pods naming no handler run the default one's platform: %+v", w)
	}
	info := p.Info()
	if h := info["handlers"].(map[string]string)["arm"]; !strings.Contains(h, "not runnable") {
		t.Errorf("Info handlers: %v", info["handlers"])
	}
}
