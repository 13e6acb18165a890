package e2e

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// counterCmd prints 1, 2, 3, ... one number every 0.1 s: its state (i) is
// in the shell's memory only.
var counterCmd = []string{"sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done"}

// lastCount is the last number a counter printed in text, 0 if none.
func lastCount(text string) int {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	n, _ := strconv.Atoi(strings.TrimSpace(lines[len(lines)-1]))
	return n
}

// waitCount waits until count() passes n, and returns it.
func waitCount(t *testing.T, what string, count func() int, n int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c := count(); c > n {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the counter did not pass %d within 30 s (at %d)", what, n, count())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pathWithout makes a directory of symlinks to every program of PATH but
// the one named, to give pierd a PATH without it.
func pathWithout(t *testing.T, name string) string {
	dir := t.TempDir()
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.Name() != name {
				os.Symlink(filepath.Join(d, e.Name()), filepath.Join(dir, e.Name())) // the first in PATH wins
			}
		}
	}
	return dir
}

func wantCode(t *testing.T, what string, err error, code codes.Code, says string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(err.Error(), says) {
		t.Errorf("%s: %v, want %v saying %q", what, err, code, says)
	}
}

// TestCheckpointErrors: CheckpointContainer refuses an unknown container, a
// bad location or timeout, a container that is not running, and, with no
// criu in pierd's PATH, says what to install; it writes nothing then.
func TestCheckpointErrors(t *testing.T) {
	p := startPierd(t, "", "PATH="+pathWithout(t, "criu"))
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "ckpt-errors")
	created := createContainer(t, p, podID, pod, containerConfig("created", counterCmd...))
	running := startContainer(t, p, podID, pod, containerConfig("running", counterCmd...))
	dir := t.TempDir()
	loc := filepath.Join(dir, "checkpoint.tar")
	checkpoint := func(id, location string, timeout int64) error {
		_, err := p.Runtime.CheckpointContainer(ctx(t), &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: location, Timeout: timeout})
		return err
	}
	wantCode(t, "unknown id", checkpoint("0123456789abcdef", loc, 0), codes.NotFound, "not found")
	wantCode(t, "empty id", checkpoint("", loc, 0), codes.InvalidArgument, "empty container id")
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	for _, bad := range []string{"", "checkpoint.tar", dir + "/../checkpoint.tar", dir + "/", dir + "/missing/checkpoint.tar", file + "/checkpoint.tar"} {
		wantCode(t, "location "+bad, checkpoint(running, bad, 0), codes.InvalidArgument, "checkpoint location")
	}
	wantCode(t, "negative timeout", checkpoint(running, loc, -1), codes.InvalidArgument, "timeout")
	wantCode(t, "huge timeout", checkpoint(running, loc, 1<<62), codes.InvalidArgument, "timeout")
	wantCode(t, "created container", checkpoint(created, loc, 0), codes.FailedPrecondition, "only a running container")
	wantCode(t, "no criu", checkpoint(running, loc, 0), codes.FailedPrecondition, "install the criu package")
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("failed checkpoints left %v", entries)
	}
	if st := containerStatus(t, p, running); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the container is %v after failed checkpoints", st.State)
	}
}

// TestCheckpointRestore: a checkpoint of a running counter leaves it
// running, writes an archive of the kubelet layout (0600), and the
// archive's CRIU images restore (runc restore) into a new process whose
// count continues from the checkpoint's, not from 1. Where `criu check`
// fails, the checkpoint must fail with FailedPrecondition quoting it, and
// the test stops there.
func TestCheckpointRestore(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "ckpt")
	id := startContainer(t, p, podID, pod, containerConfig("counter", counterCmd...))
	logPath := filepath.Join(pod.LogDirectory, "counter.log")
	logCount := func() int { return lastCount(logText(t, logPath)) }
	before := waitCount(t, "container", logCount, 5)

	loc := filepath.Join(t.TempDir(), "checkpoint.tar")
	_, err := p.Runtime.CheckpointContainer(ctx(t), &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: loc})
	if out, cerr := exec.Command("criu", "check").CombinedOutput(); cerr != nil {
		says := "check` failed"
		if errors.Is(cerr, exec.ErrNotFound) {
			says = "install the criu package"
		}
		wantCode(t, "checkpoint where criu check fails", err, codes.FailedPrecondition, says)
		if _, serr := os.Lstat(loc); !os.IsNotExist(serr) {
			t.Errorf("a failed checkpoint left %s", loc)
		}
		t.Skipf("CRIU cannot checkpoint on this host; pierd said: %v\n`criu check` (%v): %s", err, cerr, out)
	}
	if err != nil {
		t.Fatalf("CheckpointContainer: %v", err)
	}
	after := logCount()
	// Left running: the counter goes on.
	waitCount(t, "checkpointed container", logCount, after+3)
	if st := containerStatus(t, p, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("the checkpointed container is %v", st.State)
	}

	fi, err := os.Lstat(loc)
	if err != nil || fi.Mode().Perm() != 0o600 || !fi.Mode().IsRegular() {
		t.Fatalf("archive: %v %v, want a regular file 0600", fi, err)
	}
	ext := t.TempDir()
	untar(t, loc, ext)
	for _, f := range []string{"checkpoint/inventory.img", "config.dump", "spec.dump", "rootfs-diff.tar"} {
		if _, err := os.Stat(filepath.Join(ext, f)); err != nil {
			t.Errorf("archive lacks %s: %v", f, err)
		}
	}
	var config struct{ ID, Name string }
	if b, err := os.ReadFile(filepath.Join(ext, "config.dump")); err != nil || json.Unmarshal(b, &config) != nil || config.ID != id || config.Name != "counter" {
		t.Errorf("config.dump: %+v %v", config, err)
	}

	// Restore the images into a new container beside the first: the same
	// root file system and pod namespaces, its own cgroup and runc state.
	var spec specs.Spec
	b, err := os.ReadFile(filepath.Join(ext, "spec.dump"))
	if err != nil || json.Unmarshal(b, &spec) != nil {
		t.Fatalf("spec.dump: %v", err)
	}
	if !filepath.IsAbs(spec.Root.Path) {
		spec.Root.Path = filepath.Join(p.Dir, "state", "containers", id, "bundle", spec.Root.Path)
	}
	restored := "pier-e2e-restored-" + strconv.Itoa(os.Getpid())
	spec.Linux.CgroupsPath = "/" + restored
	bundle := t.TempDir()
	b, _ = json.Marshal(&spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	out, err := os.Create(filepath.Join(t.TempDir(), "restored.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	runc := func(args ...string) *exec.Cmd {
		return exec.Command("runc", append([]string{"--root", root}, args...)...)
	}
	t.Cleanup(func() { runc("delete", "--force", restored).Run() })
	cmd := runc("restore", "--detach", "--image-path", filepath.Join(ext, "checkpoint"), "--work-path", t.TempDir(),
		"--bundle", bundle, restored)
	cmd.Stdout, cmd.Stderr = out, out // the container's stdout and stderr pipes become this file
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("runc restore: %v: %s", err, b)
	}
	restoredCount := func() int { b, _ := os.ReadFile(out.Name()); return lastCount(string(b)) }
	waitCount(t, "restored process", restoredCount, 0)
	b, _ = os.ReadFile(out.Name())
	first, err := strconv.Atoi(strings.Fields(string(b))[0])
	if err != nil || first <= before || first > after+2 {
		t.Fatalf("the restored process counts from %q: want a number after %d (before the checkpoint) and at most %d (after it): its state did not come back", strings.Fields(string(b))[0], before, after+2)
	}
	last := waitCount(t, "restored process", restoredCount, first+3)
	t.Logf("counted to %d before the checkpoint, %d after; the restored process went on from %d to %d", before, after, first, last)
}

// untar extracts the regular files and directories of a tar file into
// dir, and lists the names of all its entries.
func untar(t *testing.T, path, dir string) (names []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		name := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(name, 0o700)
		case tar.TypeReg:
			var w *os.File
			if w, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
				_, err = io.Copy(w, tr)
				w.Close()
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// fakeRuncCheckpoint is a runc whose checkpoint writes what CRIU would
// (and records its arguments in $DIR/args), or fails as CRIU when
// $DIR/fail exists, as Debian 12's crun when $DIR/unknown does; every
// other command is runc's.
const fakeRuncCheckpoint = `#!/bin/sh
for a; do
	case "$prev" in --image-path) img=$a;; --work-path) work=$a;; esac
	[ "$a" = checkpoint ] && ck=1
	prev=$a
done
[ -z "$ck" ] && exec runc "$@"
echo "$@" > DIR/args
echo "(00.01) Error (criu/cr-dump.c:1): fake dump failure" > "$work/dump.log"
if [ -e DIR/unknown ]; then echo "crun: unknown command checkpoint" >&2; exit 1; fi
if [ -e DIR/fail ]; then echo "criu failed: type NOTIFY errno 0" >&2; exit 1; fi
echo inventory > "$img/inventory.img" && echo dumped > "$work/dump.log" && echo stats > "$work/stats-dump"
`

// TestCheckpointArchive: with a runc whose checkpoint stands in for
// CRIU's dump (CRIU cannot dump on every host), CheckpointContainer asks
// the runtime to leave the container running, writes the archive of the
// kubelet layout 0600 over a symlink at the location without following
// it, with the container's file changes and deletions, runs `criu check`
// once, and leaves none of its work directories; a failing dump leaves
// nothing and quotes CRIU's log; a runtime without checkpoint is
// FailedPrecondition.
func TestCheckpointArchive(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "DIR", dir)), 0o755); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write("criu", "#!/bin/sh\necho check >> "+dir+"/criu-runs\n")
	runc := write("runc-checkpoint", fakeRuncCheckpoint)
	p := startPierd(t, "[runtimes.runc]\npath = \""+runc+"\"\n", "PATH="+dir+":"+os.Getenv("PATH"))
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "ckpt-archive")
	id := startContainer(t, p, podID, pod, containerConfig("counter", "sh", "-c", "echo kept > /data.txt; rm /bin/ls; "+strings.Join(counterCmd[2:], "")))
	logPath := filepath.Join(pod.LogDirectory, "counter.log")
	logCount := func() int { return lastCount(logText(t, logPath)) }
	waitCount(t, "container", logCount, 2)

	out := t.TempDir()
	loc := filepath.Join(out, "checkpoint.tar")
	victim := filepath.Join(out, "victim")
	os.WriteFile(victim, []byte("keep"), 0o644)
	if err := os.Symlink(victim, loc); err != nil {
		t.Fatal(err)
	}
	checkpoint := func() error {
		_, err := p.Runtime.CheckpointContainer(ctx(t), &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: loc, Timeout: 60})
		return err
	}
	if err := checkpoint(); err != nil {
		t.Fatalf("CheckpointContainer: %v", err)
	}
	args, _ := os.ReadFile(filepath.Join(dir, "args"))
	for _, want := range []string{"checkpoint ", "--leave-running", "--image-path " + p.Dir, "--work-path " + p.Dir, " " + id} {
		if !strings.Contains(string(args), want) {
			t.Errorf("runtime arguments %q lack %q", args, want)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the symlink at the location was followed: its target holds %q", b)
	}
	fi, err := os.Lstat(loc)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive: %v %v, want a regular file 0600", fi, err)
	}
	ext := t.TempDir()
	untar(t, loc, ext)
	for f, want := range map[string]string{"checkpoint/inventory.img": "inventory\n", "dump.log": "dumped\n", "stats-dump": "stats\n", "deleted.files": `["/bin/ls"]`} {
		if b, err := os.ReadFile(filepath.Join(ext, f)); err != nil || strings.Join(strings.Fields(string(b)), "") != strings.Join(strings.Fields(want), "") {
			t.Errorf("archive's %s: %q %v, want %q", f, b, err, want)
		}
	}
	var config struct {
		ID, Name, RootfsImageName string
		Runtime                   string `json:"runtime"`
	}
	if b, err := os.ReadFile(filepath.Join(ext, "config.dump")); err != nil || json.Unmarshal(b, &config) != nil || config.ID != id || config.Name != "counter" || config.RootfsImageName != reg.Ref(busyboxImg) || config.Runtime != "runc" {
		t.Errorf("config.dump: %+v %v", config, err)
	}
	bundleSpec, _ := os.ReadFile(filepath.Join(p.Dir, "state", "containers", id, "bundle", "config.json"))
	if b, _ := os.ReadFile(filepath.Join(ext, "spec.dump")); len(b) == 0 || string(b) != string(bundleSpec) {
		t.Errorf("spec.dump is not the bundle's config.json")
	}
	diff := t.TempDir()
	names := untar(t, filepath.Join(ext, "rootfs-diff.tar"), diff)
	if b, _ := os.ReadFile(filepath.Join(diff, "data.txt")); string(b) != "kept\n" {
		t.Errorf("rootfs-diff.tar's data.txt: %q", b)
	}
	if slices.Contains(names, "bin/ls") {
		t.Errorf("rootfs-diff.tar has the whiteout of /bin/ls: %q", names)
	}
	waitCount(t, "checkpointed container", logCount, logCount()+2)

	// A failing dump: the error quotes the runtime and CRIU's log, the
	// archive of the last checkpoint stays as it was.
	write("fail", "")
	before, _ := os.ReadFile(loc)
	err = checkpoint()
	if err == nil || !strings.Contains(err.Error(), "criu failed: type NOTIFY errno 0") || !strings.Contains(err.Error(), "fake dump failure") {
		t.Errorf("failing dump: %v, want the runtime's message and CRIU's log", err)
	}
	if after, _ := os.ReadFile(loc); string(after) != string(before) {
		t.Errorf("a failing checkpoint changed the archive")
	}
	if runs, _ := os.ReadFile(filepath.Join(dir, "criu-runs")); string(runs) != "check\n" {
		t.Errorf("criu ran %q, want one check", runs)
	}
	left, _ := filepath.Glob(filepath.Join(p.Dir, "*", "containers", id, "checkpoint*"))
	if tmp, _ := filepath.Glob(filepath.Join(out, ".*")); len(left)+len(tmp) > 0 {
		t.Errorf("checkpoints left %v %v", left, tmp)
	}
	if st := containerStatus(t, p, id); st.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Errorf("the container is %v after its checkpoints", st.State)
	}

	// A runtime built without CRIU (Debian 12's crun) says so.
	os.Remove(filepath.Join(dir, "fail"))
	write("unknown", "")
	_, err = p.Runtime.CheckpointContainer(ctx(t), &runtimeapi.CheckpointContainerRequest{ContainerId: id, Location: filepath.Join(out, "unknown.tar")})
	wantCode(t, "a runtime without CRIU", err, codes.FailedPrecondition, `runtime handler "runc" cannot checkpoint`)
}
