package container

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheckLocation(t *testing.T) {
	for _, loc := range []string{"", "rel/c.tar", "/a/../c.tar", "/a/./c.tar", "/a//c.tar", "/a/", "/", "/a/c\x00.tar"} {
		if err := CheckLocation(loc); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckLocation(%q) = %v, want ErrInvalid", loc, err)
		}
	}
	if err := CheckLocation("/var/lib/kubelet/checkpoints/checkpoint-p_ns-c-2026.tar"); err != nil {
		t.Errorf("a kubelet location: %v", err)
	}
}

// fakeCRIU writes a criu that counts its runs in dir/runs and exits with
// code.
func fakeCRIU(t *testing.T, code string) string {
	dir := t.TempDir()
	bin := filepath.Join(dir, "criu")
	script := "#!/bin/sh\necho run >> " + filepath.Join(dir, "runs") + "\necho 'Warn  (criu/kerndat.c:1): something'\necho 'Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds' >&2\nexit " + code + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func runs(t *testing.T, bin string) int {
	b, _ := os.ReadFile(filepath.Join(filepath.Dir(bin), "runs"))
	return strings.Count(string(b), "run")
}

func TestCRIUReady(t *testing.T) {
	k := &CRIU{Binary: "pier-test-no-such-criu"}
	if err := k.Ready(); !errors.Is(err, ErrCheckpoint) || !strings.Contains(err.Error(), "install the criu package") {
		t.Errorf("no criu: %v, want ErrCheckpoint saying what to install", err)
	}

	bad := fakeCRIU(t, "1")
	k = &CRIU{Binary: bad}
	for range 2 {
		err := k.Ready()
		if !errors.Is(err, ErrCheckpoint) || !strings.Contains(err.Error(), "vdso: Unexpected rt vDSO area bounds") || strings.Contains(err.Error(), "Warn") {
			t.Errorf("failing criu check: %v, want ErrCheckpoint with its Error lines only", err)
		}
	}
	if n := runs(t, bad); n != 1 {
		t.Errorf("criu check ran %d times, want once", n)
	}

	good := fakeCRIU(t, "0")
	k.Binary = good // another binary (installed meanwhile): checked anew
	if err := k.Ready(); err != nil {
		t.Errorf("passing criu check: %v", err)
	}
	if err := k.Ready(); err != nil || runs(t, good) != 1 {
		t.Errorf("passing criu check again: %v, %d runs, want nil and 1", err, runs(t, good))
	}
}

// tarEntries lists a tar file's entries: name -> header.
func tarEntries(t *testing.T, path string) map[string]*tar.Header {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out[h.Name] = h
	}
}

func TestWriteRootfsDiff(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a whiteout (mknod c 0 0) needs root")
	}
	upper := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(upper, "etc", "app"), 0o755))
	must(os.WriteFile(filepath.Join(upper, "etc", "app", "conf"), []byte("state=1\n"), 0o640))
	must(os.Symlink("/etc/shadow", filepath.Join(upper, "link")))
	must(unix.Mknod(filepath.Join(upper, "etc", "gone"), unix.S_IFCHR|0o600, 0))
	out := filepath.Join(t.TempDir(), "rootfs-diff.tar")
	deleted, err := writeRootfsDiff(upper, out)
	must(err)
	if !slices.Equal(deleted, []string{"/etc/gone"}) {
		t.Errorf("deleted = %q, want [/etc/gone]", deleted)
	}
	got := tarEntries(t, out)
	if h := got["etc/app/conf"]; h == nil || h.Size != 8 || h.Mode&0o777 != 0o640 {
		t.Errorf("etc/app/conf: %+v", h)
	}
	if h := got["link"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/etc/shadow" {
		t.Errorf("link: %+v, want a symlink to /etc/shadow, not followed", h)
	}
	if got["etc/"] == nil || got["etc/gone"] != nil {
		t.Errorf("entries %v: want etc/ and no whiteout", slices.Sorted(func(yield func(string) bool) {
			for k := range got {
				if !yield(k) {
					return
				}
			}
		}))
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("rootfs-diff.tar mode: %v %v", fi, err)
	}
}

// TestWriteArchive: the archive is 0600, and a symlink at the location is
// replaced, not followed.
func TestWriteArchive(t *testing.T) {
	stage := t.TempDir()
	if err := os.MkdirAll(filepath.Join(stage, "checkpoint"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"checkpoint/inventory.img", "config.dump", "spec.dump"} {
		if err := os.WriteFile(filepath.Join(stage, f), []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	loc := filepath.Join(dir, "checkpoint.tar")
	if err := os.Symlink(victim, loc); err != nil {
		t.Fatal(err)
	}
	if err := writeArchive(context.Background(), stage, loc); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	fi, err := os.Lstat(loc)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v %v, want a regular file 0600", fi, err)
	}
	got := tarEntries(t, loc)
	for _, name := range []string{"checkpoint/", "checkpoint/inventory.img", "config.dump", "spec.dump"} {
		if got[name] == nil {
			t.Errorf("archive lacks %s", name)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := writeArchive(ctx, stage, filepath.Join(dir, "cancelled.tar")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*cancelled*")); len(left) > 0 {
		t.Errorf("a cancelled archive left %v", left)
	}
}
