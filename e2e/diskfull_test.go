package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// mountSmallFS mounts a fresh ext4 file system of size bytes, in a loop
// device, on dir, until the test ends (the loop device goes with the
// unmount: mount's autoclear).
func mountSmallFS(t *testing.T, dir string, size int64) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.img")
	f, err := os.Create(img)
	if err == nil {
		err = errors.Join(f.Truncate(size), f.Close())
	}
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			exec.Command("umount", "-l", dir).Run() //nolint:errcheck // best effort
		}
	})
}

// fill writes zeros to path until the file system is full, then small
// files beside it until not even those fit.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	full := func(err error) bool {
		if err != nil && !errors.Is(err, syscall.ENOSPC) {
			t.Fatal(err)
		}
		return err != nil
	}
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); full(err) {
			break
		}
	}
	if full(f.Sync()) {
		return
	}
	for i := 0; ; i++ {
		err := os.WriteFile(filepath.Join(path+".d", fmt.Sprint(i)), buf[:4096], 0o600)
		if i == 0 && errors.Is(err, os.ErrNotExist) {
			if err := os.Mkdir(path+".d", 0o700); full(err) {
				return
			}
			continue
		}
		if full(err) {
			return
		}
	}
}

// TestDiskFull runs pierd on a 64 MiB file system: a pull of a bigger image
// fails with a clear error and leaves nothing half-written, the store stays
// usable (a small image pulls and runs, a restart loads it cleanly), and a
// CreateContainer on a full disk fails clearly and works once space is
// freed.
func TestDiskFull(t *testing.T) {
	big := bigImage(t)
	dir := t.TempDir()
	mountSmallFS(t, filepath.Join(dir, "root"), 64<<20)
	p, err := testenv.StartPierd(testenv.PierdOptions{Binary: pierdBin, Dir: dir, Config: network.Config()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.RemovePods(); err != nil {
			t.Errorf("remove the test's pods: %v", err)
		}
		if err := p.Stop(); err != nil {
			t.Errorf("stop pierd: %v", err)
		}
		if t.Failed() {
			t.Logf("pierd log:\n%s", p.LogText())
		}
	})

	_, err = pull(t, p, big.Ref("bench/big:1"), nil)
	t.Logf("pull of a 211 MB image onto 64 MiB: %v", err)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "full") || !strings.Contains(err.Error(), p.Root()) {
		t.Fatalf("pull onto a full disk: %v", err)
	}
	assertNoPartialLayer(t, p)
	if imgs := listImages(t, p); len(imgs) != 0 {
		t.Fatalf("images after a failed pull: %v", imgs)
	}

	// The store stays usable.
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "diskfull")
	id := startContainer(t, p, podID, pod, containerConfig("ok", "true"))
	if st := waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_EXITED); st.ExitCode != 0 {
		t.Fatalf("container on the small disk: exit %d %s", st.ExitCode, st.Message)
	}

	// A restart loads the store cleanly: only the complete image.
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(p.LogText(), "Dropping unreadable") {
		t.Fatalf("the store did not load cleanly:\n%s", p.LogText())
	}
	if imgs := listImages(t, p); len(imgs) != 1 {
		t.Fatalf("images after restart: %v", imgs)
	}
	assertNoPartialLayer(t, p)

	// CreateContainer on a full disk fails clearly, and works once space
	// is freed.
	filler := filepath.Join(p.Root(), "filler")
	fill(t, filler)
	_, err = p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: containerConfig("full", "true"), SandboxConfig: pod})
	t.Logf("CreateContainer on a full disk: %v", err)
	if err == nil {
		t.Fatal("CreateContainer succeeded on a full disk")
	}
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("CreateContainer on a full disk: unclear error: %v, want ResourceExhausted", err)
	}
	if err := errors.Join(os.Remove(filler), os.RemoveAll(filler+".d")); err != nil {
		t.Fatal(err)
	}
	id = startContainer(t, p, podID, pod, containerConfig("freed", "true"))
	if st := waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_EXITED); st.ExitCode != 0 {
		t.Fatalf("container after freeing space: exit %d %s", st.ExitCode, st.Message)
	}
}
