package idmap

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/internal/mountinfo"
)

const hostRoot = 200000

var mapping = []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostRoot, Size: 65536}}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("idmapped mounts need root")
	}
}

// userns starts a process in a new user namespace (0 -> 200000, 65536
// ids) and returns the path of that namespace; cleanup ends the process.
func userns(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: mapping, GidMappings: mapping}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return fmt.Sprintf("/proc/%d/ns/user", cmd.Process.Pid)
}

// tempDir is a temporary directory whose mounts are undone before it is
// removed.
func tempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		if err := mountinfo.UnmountUnder(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

func owner(t *testing.T, path string) (uint32, uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid, st.Gid
}

func TestCloneShiftsOwners(t *testing.T) {
	needRoot(t)
	ns, dir := userns(t), tempDir(t)
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "d st") // mountinfo escapes the space
	os.Mkdir(src, 0o755)
	os.WriteFile(filepath.Join(src, "root"), []byte("r"), 0o644)
	os.WriteFile(filepath.Join(src, "user"), []byte("u"), 0o644)
	os.Chown(filepath.Join(src, "user"), 1000, 1001)
	// A bind mount of its own, as kubelet's volumes are, or a directory.
	if err := unix.Mount(src, src, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if err := Clone(src, dst, ns, true); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][2]uint32{".": {hostRoot, hostRoot}, "root": {hostRoot, hostRoot}, "user": {hostRoot + 1000, hostRoot + 1001}} {
		if uid, gid := owner(t, filepath.Join(dst, name)); uid != want[0] || gid != want[1] {
			t.Errorf("%s in the clone: owner %d:%d, want %d:%d", name, uid, gid, want[0], want[1])
		}
	}
	if uid, _ := owner(t, filepath.Join(src, "root")); uid != 0 {
		t.Errorf("the source's owner changed to %d", uid)
	}
	// Root of the namespace writes through the clone: the file is stored
	// as owned by 0. Host root is not mapped: it cannot.
	cmd := exec.Command("sh", "-c", "echo x > /proc/self/fd/3/new")
	d, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cmd.ExtraFiles = []*os.File{d}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: mapping, GidMappings: mapping,
		GidMappingsEnableSetgroups: true, Credential: &syscall.Credential{}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("write as the namespace's root: %v %s", err, out)
	}
	if uid, gid := owner(t, filepath.Join(src, "new")); uid != 0 || gid != 0 {
		t.Errorf("file made by the namespace's root is stored as %d:%d, want 0:0", uid, gid)
	}
	if err := os.WriteFile(filepath.Join(dst, "host"), nil, 0o644); !errors.Is(err, unix.EOVERFLOW) {
		t.Errorf("host root wrote through the clone: %v", err)
	}
	// A file.
	if err := Clone(filepath.Join(src, "user"), filepath.Join(dir, "file"), ns, false); err != nil {
		t.Fatal(err)
	}
	if uid, _ := owner(t, filepath.Join(dir, "file")); uid != hostRoot+1000 {
		t.Errorf("file clone owned by %d", uid)
	}
	if err := mountinfo.UnmountUnder(dir); err != nil {
		t.Fatal(err)
	}
	if left, _ := mountinfo.Under(dir); len(left) > 0 {
		t.Errorf("mounts left: %v", left)
	}
}

func TestNotSupported(t *testing.T) {
	needRoot(t)
	ns, dir := userns(t), tempDir(t)
	if err := Check("/proc", ns); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Check(/proc): %v", err)
	}
	if err := Check(dir, ns); err != nil {
		t.Errorf("Check(%s): %v", dir, err)
	}
	dst := filepath.Join(dir, "proc")
	if err := Clone("/proc", dst, ns, false); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Clone(/proc): %v", err)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Errorf("a refused clone left %s", dst)
	}
	if err := BindClone("/proc", dst, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dst, "self")); err != nil {
		t.Error(err)
	}
}
