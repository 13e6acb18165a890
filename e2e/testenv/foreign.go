package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/platform"
)

// ForeignDir is where `make test-deps` unpacks, without installing them,
// Debian's busybox-static for arm64 (ForeignDir/arm64) and
// qemu-aarch64-static from qemu-user-static (ForeignDir/qemu). Installing
// qemu-user-static would leave binfmt.d files that systemd-binfmt registers
// at every boot.
const ForeignDir = "/var/cache/pier-e2e/foreign"

// EmulatorPrefix starts the names of the binfmt_misc registrations the
// tests make ("pier-e2e-aarch64").
const EmulatorPrefix = "pier-e2e-"

// Arm64BusyboxBinary is Debian's busybox-static for arm64, unpacked.
var Arm64BusyboxBinary = filepath.Join(ForeignDir, "arm64", "bin", "busybox")

// QemuAarch64 returns the static QEMU user-mode interpreter for aarch64:
// the one `make test-deps` unpacked, else an installed qemu-user-static's.
func QemuAarch64() (string, error) {
	for _, p := range []string{filepath.Join(ForeignDir, "qemu", "usr", "bin", "qemu-aarch64-static"), "/usr/bin/qemu-aarch64-static"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("qemu-aarch64-static is neither in %s/qemu nor in /usr/bin: run `make test-deps`", ForeignDir)
}

// ForeignMissing says what the foreign-platform tests lack (the arm64
// busybox, QEMU, binfmt_misc in the kernel), naming `make test-deps`, or
// returns "" when they have it all.
func ForeignMissing() string {
	var missing []string
	if _, err := os.Stat(Arm64BusyboxBinary); err != nil {
		missing = append(missing, "Debian's busybox-static for arm64 ("+Arm64BusyboxBinary+")")
	}
	if _, err := QemuAarch64(); err != nil {
		missing = append(missing, "qemu-aarch64-static")
	}
	if len(missing) > 0 {
		return "foreign platforms: missing " + strings.Join(missing, " and ") + ": run `make test-deps` (as root), which unpacks them into " + ForeignDir
	}
	if b, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(b, []byte("\tbinfmt_misc\n")) {
		return "foreign platforms: the kernel has no binfmt_misc file system (/proc/filesystems)"
	}
	return ""
}

// SkipUnlessForeign skips t when ForeignMissing reports something.
func SkipUnlessForeign(t testing.TB) {
	t.Helper()
	if msg := ForeignMissing(); msg != "" {
		t.Skip(msg)
	}
}

// arm64Applets lists the applets of the arm64 busybox, asked of the binary
// itself through QEMU (run directly, no binfmt_misc needed).
var arm64Applets = sync.OnceValues(func() ([]string, error) {
	qemu, err := QemuAarch64()
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(qemu, Arm64BusyboxBinary, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s --list: %w", qemu, Arm64BusyboxBinary, err)
	}
	applets := strings.Fields(string(out))
	for _, need := range []string{"sh", "uname", "sha256sum", "sleep", "cat"} {
		if !slices.Contains(applets, need) {
			return nil, fmt.Errorf("%s has no %s applet", Arm64BusyboxBinary, need)
		}
	}
	slices.Sort(applets)
	return applets, nil
})

// arm64BusyboxLayer is the layer of Arm64Busybox, built once per process.
var arm64BusyboxLayer = sync.OnceValues(func() (*layer, error) {
	if msg := ForeignMissing(); msg != "" {
		return nil, errors.New(msg)
	}
	binary, err := os.ReadFile(Arm64BusyboxBinary)
	if err != nil {
		return nil, err
	}
	applets, err := arm64Applets()
	if err != nil {
		return nil, err
	}
	entries := append(busyboxTree(binary, applets, []string{"bin", "etc", "root", "tmp", "usr", "usr/bin", "usr/sbin", "sbin"}),
		fileEntry("etc/passwd", 0o644, []byte(etcPasswd)),
		fileEntry("etc/group", 0o644, []byte(etcGroup)),
	)
	return gzipLayer(entries...)
})

// Arm64Busybox returns a linux/arm64/v8 image of Debian's busybox-static
// for arm64: /bin/busybox, its applets hard-linked to it in /bin (sh,
// uname, sha256sum, sleep, cat...), /etc/passwd and group; Cmd ["sh"].
// It needs `make test-deps` (see ForeignMissing).
func Arm64Busybox() (v1.Image, error) {
	l, err := arm64BusyboxLayer()
	if err != nil {
		return nil, err
	}
	return newImage(linuxARM64, false, shCmd, l)
}

// BusyboxIndex returns a Docker manifest list of the native busybox image
// (Busybox, linux/amd64) and Arm64Busybox (linux/arm64/v8), under one
// reference.
func BusyboxIndex() (v1.ImageIndex, error) {
	native, err := Busybox()
	if err != nil {
		return nil, err
	}
	arm, err := Arm64Busybox()
	if err != nil {
		return nil, err
	}
	return newIndex(native, arm)
}

// binfmtMagic are the ELF header bytes (and mask) a registration for an
// architecture matches, as QEMU's and Debian's registrations do (QEMU's
// names, as binfmt_misc entries use them).
var binfmtMagic = map[string]struct{ magic, mask string }{
	"aarch64": {
		"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
		"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
	},
}

// binfmt tracks whether the tests mounted binfmt_misc and must unmount it.
var binfmt struct {
	sync.Mutex
	mounted bool
	live    map[string]bool // registrations of the tests'
}

// Emulator is a binfmt_misc registration a test made.
type Emulator struct {
	Name        string // EmulatorPrefix + arch
	Interpreter string
	Flags       string
	once        sync.Once
	err         error
}

// RegisterEmulator registers the static QEMU interpreter for arch (QEMU's
// name: "aarch64") with binfmt_misc as EmulatorPrefix+arch, with flags
// ("F", "" or others binfmt_misc knows), mounting binfmt_misc at
// platform.BinfmtDir first if it is not mounted. A registration of the same
// name (left by an earlier test) is replaced. It fails t if another
// registration runs arch's binaries: it would decide, or change, what pier
// finds. The test's cleanup unregisters it (see Unregister). The caller
// must hold the host lock (internal/hostlock), as the e2e tests do: the
// registration is the whole host's.
func RegisterEmulator(t testing.TB, arch, flags string) *Emulator {
	t.Helper()
	e, err := registerEmulator(arch, flags)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Unregister(); err != nil {
			t.Error(err)
		}
	})
	return e
}

func registerEmulator(arch, flags string) (*Emulator, error) {
	m, ok := binfmtMagic[arch]
	if !ok {
		return nil, fmt.Errorf("RegisterEmulator: no ELF magic known for %q", arch)
	}
	qemu, err := QemuAarch64()
	if err != nil {
		return nil, err
	}
	if arch != "aarch64" {
		return nil, fmt.Errorf("RegisterEmulator: only aarch64's interpreter is unpacked")
	}
	if err := mountBinfmt(); err != nil {
		return nil, err
	}
	e := &Emulator{Name: EmulatorPrefix + arch, Interpreter: qemu, Flags: flags}
	// An earlier registration of ours (a test that died) goes first.
	if err := unregisterEntry(e.Name); err != nil {
		return nil, err
	}
	want := platform.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	for _, other := range platform.Scan(platform.BinfmtDir) {
		if other.Platform == want && other.Name != e.Name {
			unmountIfUnused()
			return nil, fmt.Errorf("binfmt_misc already has %s for %s (interpreter %s, flags %q): it would change what pier finds and which emulator the kernel runs; remove it for the tests (echo -1 > %s) and register it again afterwards",
				other.Name, other.Platform, other.Interpreter, other.Flags, filepath.Join(platform.BinfmtDir, other.Name))
		}
	}
	line := fmt.Sprintf(":%s:M::%s:%s:%s:%s", e.Name, escapeBinfmt(m.magic), escapeBinfmt(m.mask), qemu, flags)
	if err := os.WriteFile(filepath.Join(platform.BinfmtDir, "register"), []byte(line), 0); err != nil {
		unmountIfUnused()
		return nil, fmt.Errorf("register %s with binfmt_misc (%q): %w", e.Name, line, err)
	}
	binfmt.Lock()
	if binfmt.live == nil {
		binfmt.live = map[string]bool{}
	}
	binfmt.live[e.Name] = true
	binfmt.Unlock()
	return e, nil
}

// Unregister removes the registration (writes -1 to its entry) and
// unmounts binfmt_misc if RegisterEmulator mounted it and no registration
// is left. It does this once; later calls return the first's error.
func (e *Emulator) Unregister() error {
	e.once.Do(func() {
		e.err = unregisterEntry(e.Name)
		binfmt.Lock()
		delete(binfmt.live, e.Name)
		binfmt.Unlock()
		unmountIfUnused()
	})
	return e.err
}

// unregisterEntry removes the registration name if it exists.
func unregisterEntry(name string) error {
	path := filepath.Join(platform.BinfmtDir, name)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.WriteFile(path, []byte("-1"), 0); err != nil {
		return fmt.Errorf("unregister %s from binfmt_misc: %w", name, err)
	}
	return nil
}

// mountBinfmt mounts binfmt_misc at platform.BinfmtDir unless it is.
func mountBinfmt() error {
	binfmt.Lock()
	defer binfmt.Unlock()
	if _, err := os.Stat(filepath.Join(platform.BinfmtDir, "register")); err == nil {
		return nil
	}
	if err := unix.Mount("binfmt_misc", platform.BinfmtDir, "binfmt_misc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount binfmt_misc on %s: %w", platform.BinfmtDir, err)
	}
	binfmt.mounted = true
	return nil
}

// unmountIfUnused unmounts binfmt_misc if the tests mounted it and it holds
// no registration (of anyone's) any more.
func unmountIfUnused() {
	binfmt.Lock()
	defer binfmt.Unlock()
	if !binfmt.mounted || len(binfmt.live) > 0 {
		return
	}
	entries, err := os.ReadDir(platform.BinfmtDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Name() != "status" && e.Name() != "register" {
			return
		}
	}
	if err := unix.Unmount(platform.BinfmtDir, 0); err == nil {
		binfmt.mounted = false
	}
}

// BinfmtMounted reports whether binfmt_misc is mounted at
// platform.BinfmtDir.
func BinfmtMounted() bool {
	_, err := os.Stat(filepath.Join(platform.BinfmtDir, "register"))
	return err == nil
}

// escapeBinfmt writes b as binfmt_misc's register line wants it: every
// byte as \xHH.
func escapeBinfmt(b string) string {
	var s strings.Builder
	for i := 0; i < len(b); i++ {
		fmt.Fprintf(&s, `\x%02x`, b[i])
	}
	return s.String()
}
