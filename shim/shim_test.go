package shim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/internal/proc"
	"github.com/pier-runtime/pier/oci"
	"github.com/pier-runtime/pier/shim/protocol"
)

// Tests that run containers need root, runc and busybox. The test process
// is a child subreaper while they run: a shim whose parent exits, and a
// container whose shim is killed, become its children, and the tests reap
// them by pid.

const (
	cgroupParent = "pier-shim-test"
	busybox      = "/bin/busybox"
	helperEnv    = "PIER_SHIM_TEST_HELPER"
)

// shimBinary is pier-shim, built once by TestMain.
var shimBinary string

func TestMain(m *testing.M) {
	if f := os.Getenv(helperEnv); f != "" {
		os.Exit(helperMain(f))
	}
	dir, err := os.MkdirTemp("", "pier-shim-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	shimBinary = filepath.Join(dir, "pier-shim")
	// As the Makefile builds it.
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", shimBinary, "github.com/pier-runtime/pier/cmd/pier-shim")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build pier-shim: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// The Makefile builds the monitor; it must sit beside pier-shim.
	monitor := os.Getenv("PIER_TEST_MONITOR") // e.g. bin/pier-shim-monitor-asan
	if monitor == "" {
		monitor = "bin/pier-shim-monitor"
	}
	if out, err := exec.Command("make", "-s", "-C", "..", monitor).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "make %s: %v\n%s", monitor, err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	if err := copyFile(filepath.Join("..", monitor), filepath.Join(dir, "pier-shim-monitor")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	if os.Geteuid() == 0 {
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	}
	code := m.Run()
	// runc leaves the parent of the test cgroups.
	parents, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", cgroupParent))
	for _, p := range parents {
		if err := unix.Rmdir(p); err != nil && !errors.Is(err, unix.ENOENT) {
			fmt.Fprintf(os.Stderr, "cgroup %s left behind: %v\n", p, err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// helperMain starts a shim for the Config in file, prints its pid and
// exits without waiting for it: the shim outlives its parent.
func helperMain(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var args struct {
		Binary string
		Config protocol.Config
	}
	if err := json.Unmarshal(b, &args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, pid, err := Start(ctx, args.Binary, args.Config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(pid)
	return 0
}

// testContainer is a container's bundle and shim files, in temporary
// directories, and the runtime that runs it.
type testContainer struct {
	id     string
	spec   *specs.Spec
	bundle string
	gate   string // bind-mounted at /gate in the container
	cfg    protocol.Config
	rt     *oci.Runtime
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// needRoot skips a test that cannot run containers here.
func needRoot(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("no runc")
	}
	if _, err := os.Stat(busybox); err != nil {
		t.Skip("no busybox")
	}
	return runc
}

// newContainer makes the bundle of a busybox container running args, with
// its own pid, ipc, uts, mount and network namespaces and a cgroup
// /pier-shim-test/<id>. Cleanup deletes whatever is left of it and fails
// the test if the runtime, a cgroup or a process still holds it.
func newContainer(t testing.TB, args ...string) *testContainer {
	t.Helper()
	runc := needRoot(t)
	id := "pst-" + randomHex(t, 6)
	base := t.TempDir()
	sockDir, err := os.MkdirTemp("", "pst")
	if err != nil {
		t.Fatal(err)
	}
	c := &testContainer{
		id:     id,
		bundle: filepath.Join(base, "bundle"),
		gate:   filepath.Join(base, "gate"),
		rt:     &oci.Runtime{Name: "runc", Path: runc, Root: filepath.Join(base, "runc")},
	}
	c.cfg = protocol.Config{
		Version: protocol.Version,
		ID:      id,
		Bundle:  c.bundle,
		Runtime: *c.rt,
		Dir:     filepath.Join(base, "shim"),
		Socket:  filepath.Join(sockDir, randomHex(t, 6)+".sock"),
		LogPath: filepath.Join(base, "logs", "c.log"),
		LogDir:  filepath.Join(base, "logs"),
	}
	rootfs := filepath.Join(c.bundle, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "gate", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{c.gate, filepath.Dir(c.cfg.LogPath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyFile(busybox, filepath.Join(rootfs, "bin", "busybox")); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"sh", "sleep", "echo", "cat", "head", "tr", "printf", "pwd", "id", "env", "true", "kill", "touch", "stty", "yes"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", app)); err != nil {
			t.Fatal(err)
		}
	}
	c.spec = &specs.Spec{
		Version: "1.0.2", // crun 1.8 accepts no other
		Process: &specs.Process{
			Args:         args,
			Cwd:          "/tmp",
			Env:          []string{"PATH=/bin", "GREETING=hello"},
			Capabilities: &specs.LinuxCapabilities{},
		},
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Hostname: "pst",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=1m"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "size=1m"}},
			{Destination: "/gate", Type: "bind", Source: c.gate, Options: []string{"rbind", "rw"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: "/" + cgroupParent + "/" + id,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
			},
		},
	}
	t.Cleanup(func() {
		os.RemoveAll(sockDir)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if s, err := c.rt.State(ctx, id); err == nil {
			t.Errorf("runtime still has container %s (%s); deleting it", id, s.Status)
			c.rt.Delete(ctx, id, true)
			if s.Pid > 0 {
				reap(t, s.Pid)
			}
		}
		if entries, _ := os.ReadDir(c.rt.Root); len(entries) > 0 {
			t.Errorf("runtime state left in %s: %v", c.rt.Root, entries)
		}
		if left := cgroups(id); len(left) > 0 {
			t.Errorf("cgroups left: %q", left)
			for _, p := range left {
				unix.Rmdir(p)
			}
		}
	})
	return c
}

// writeSpec writes the bundle's config.json.
func (c *testContainer) writeSpec(t testing.TB) {
	t.Helper()
	b, err := json.Marshal(c.spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.bundle, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// start writes the spec and starts the container's shim. Cleanup deletes
// the container through it and checks that the shim has exited.
func (c *testContainer) start(t testing.TB) (*Client, int) {
	t.Helper()
	c.writeSpec(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, pid, err := Start(ctx, shimBinary, c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := client.Delete(context.Background()); err != nil {
			t.Errorf("delete: %v", err)
		}
		waitGone(t, pid)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.rt.Delete(ctx, c.id, true); err != nil && !errors.Is(err, oci.ErrNotFound) {
			t.Errorf("runtime delete: %v", err)
		}
		if _, err := os.Stat(c.cfg.Socket); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket %s left: %v", c.cfg.Socket, err)
		}
	})
	return client, pid
}

// run starts the created container as pierd does: the runtime's start,
// then the shim is told.
func (c *testContainer) run(ctx context.Context, client *Client) error {
	if err := c.rt.Start(ctx, c.id); err != nil {
		return err
	}
	return client.Started(ctx)
}

// open lets a container that waits for /gate/go go on.
func (c *testContainer) open(t testing.TB) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(c.gate, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitGate is a shell line that waits until the test opens the gate.
const waitGate = "while [ ! -e /gate/go ]; do sleep 0.02; done; "

func copyFile(src, dst string) error {
	if os.Link(src, dst) == nil {
		return nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// cgroups lists the cgroups of container id in every hierarchy.
func cgroups(id string) []string {
	m, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", cgroupParent, id))
	m2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", cgroupParent, id))
	return append(m, m2...)
}

// waitGone waits until process pid no longer exists (its parent reaped it).
func waitGone(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("process %d still there", pid)
}

// reap waits for child pid of the test process (a subreaper) to exit and
// reaps it.
func reap(t testing.TB, pid int) unix.WaitStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid {
			return ws
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Errorf("wait4 %d: %v", pid, err)
			return 0
		}
		if time.Now().After(deadline) {
			t.Errorf("process %d did not exit", pid)
			return 0
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

type logEntry struct {
	time           time.Time
	stream, tag, s string
}

var logLine = regexp.MustCompile(`^(\S+) (stdout|stderr) ([FP]) (.*)$`)

// readLog parses a CRI log file and returns its entries by stream.
func readLog(t testing.TB, path string) map[string][]logEntry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string][]logEntry{}
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line == "" {
			continue
		}
		if !strings.HasSuffix(line, "\n") {
			t.Errorf("log line without a newline: %q", line)
		}
		m := logLine.FindStringSubmatch(strings.TrimSuffix(line, "\n"))
		if m == nil {
			t.Errorf("bad log line %.100q", line)
			continue
		}
		ts, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Errorf("bad timestamp in %.100q: %v", line, err)
		}
		entries[m[2]] = append(entries[m[2]], logEntry{ts, m[2], m[3], m[4]})
	}
	return entries
}

func TestLifecycle(t *testing.T) {
	c := newContainer(t, "sh", "-c", waitGate+`
echo out1
echo err1 >&2
head -c 40000 /dev/zero | tr '\0' a; echo
head -c 16384 /dev/zero | tr '\0' b; echo
echo err2 >&2
printf tail
exit 3`)
	ctx := ctxT(t)
	before := time.Now()
	client, shimPid := c.start(t)

	st, err := client.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != protocol.StatusCreated || st.Pid <= 0 || st.ShimPid != shimPid || st.CreatedAt.Before(before) || !st.StartedAt.IsZero() || st.Exit != nil {
		t.Errorf("state after create %+v", st)
	}
	if rs, err := c.rt.State(ctx, c.id); err != nil || rs.Status != "created" || rs.Pid != st.Pid {
		t.Errorf("runtime state %+v, %v", rs, err)
	}
	// The shim is in a session of its own, and the init is its child.
	if sid, _ := unix.Getsid(shimPid); sid != shimPid {
		t.Errorf("shim session %d, want %d", sid, shimPid)
	}
	if ppid := parentOf(st.Pid); ppid != shimPid {
		t.Errorf("init's parent %d, want the shim %d", ppid, shimPid)
	}
	if len(cgroups(c.id)) == 0 {
		t.Error("no cgroup")
	}

	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	if st, err = client.State(ctx); err != nil || st.Status != protocol.StatusRunning || st.StartedAt.IsZero() {
		t.Errorf("state after start %+v, %v", st, err)
	}
	if err := c.run(ctx, client); err == nil {
		t.Error("a second start succeeded")
	}
	if _, err := protocol.ReadExit(c.cfg.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("exit file before the exit: %v", err)
	}

	// Several waiters at once.
	type result struct {
		exit *protocol.Exit
		err  error
	}
	waits := make(chan result, 3)
	for range 3 {
		go func() {
			e, err := client.Wait(ctx)
			waits <- result{e, err}
		}()
	}
	c.open(t)
	var exit *protocol.Exit
	for range 3 {
		r := <-waits
		if r.err != nil {
			t.Fatal(r.err)
		}
		exit = r.exit
		if r.exit.Code != 3 || r.exit.Signal != 0 || r.exit.OOMKilled || r.exit.FinishedAt.Before(st.StartedAt) {
			t.Errorf("exit %+v", r.exit)
		}
	}
	if fe, err := protocol.ReadExit(c.cfg.Dir); err != nil || fe.Code != 3 || !fe.FinishedAt.Equal(exit.FinishedAt) {
		t.Errorf("exit file %+v, %v; want %+v", fe, err, exit)
	}
	// Records are root's alone.
	for _, f := range []string{protocol.ExitFile, protocol.ConfigFile} {
		if fi, err := os.Stat(filepath.Join(c.cfg.Dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", f, fi.Mode().Perm(), err)
		}
	}
	if st, err = client.State(ctx); err != nil || st.Status != protocol.StatusExited || st.Exit == nil || st.Exit.Code != 3 {
		t.Errorf("state after exit %+v, %v", st, err)
	}
	// The shim stays until Delete and keeps answering.
	if e, err := client.Wait(ctx); err != nil || e.Code != 3 {
		t.Errorf("wait after the exit: %+v, %v", e, err)
	}
	if err := c.rt.Kill(ctx, c.id, syscall.SIGTERM, false); err == nil {
		t.Error("the runtime's kill after the exit succeeded")
	}

	// The log, in CRI format: the output is complete once the exit is known.
	log := readLog(t, c.cfg.LogPath)
	var got []string
	for _, e := range log["stdout"] {
		got = append(got, e.tag+" "+summarize(e.s))
	}
	want := []string{"F out1", "P a*16384", "P a*16384", "F a*7232", "F b*16384", "P tail"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stdout entries\n got %q\nwant %q", got, want)
	}
	got = nil
	for _, e := range log["stderr"] {
		got = append(got, e.tag+" "+e.s)
		if e.time.Before(before) || e.time.After(exit.FinishedAt) {
			t.Errorf("entry time %v", e.time)
		}
	}
	if want := []string{"F err1", "F err2"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("stderr entries %q, want %q", got, want)
	}

	if err := client.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	waitGone(t, shimPid)
	// The runtime's state is pierd's to delete, once the shim has ended.
	if _, err := c.rt.State(ctx, c.id); err != nil {
		t.Errorf("runtime state after the shim's delete: %v", err)
	}
	if err := c.rt.Delete(ctx, c.id, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.rt.State(ctx, c.id); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("runtime state after delete: %v", err)
	}
	if left := cgroups(c.id); len(left) > 0 {
		t.Errorf("cgroups after delete: %q", left)
	}
	if err := unix.Kill(st.Pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("init %d after delete: %v", st.Pid, err)
	}
	// Delete again: the shim is gone, that is fine. Other calls say so.
	if err := client.Delete(ctx); err != nil {
		t.Errorf("second delete: %v", err)
	}
	if _, err := client.State(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("state of a deleted shim: %v", err)
	}
	// The exit file stays for pierd.
	if _, err := protocol.ReadExit(c.cfg.Dir); err != nil {
		t.Errorf("exit file after delete: %v", err)
	}
}

// summarize writes a run of one repeated character as "c*n".
func summarize(s string) string {
	if len(s) > 8 && strings.Count(s, s[:1]) == len(s) {
		return s[:1] + "*" + strconv.Itoa(len(s))
	}
	return s
}

func parentOf(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func TestDeleteCreated(t *testing.T) {
	c := newContainer(t, "sleep", "100")
	client, _ := c.start(t)
	ctx := ctxT(t)
	st, err := client.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	// The init, killed before it ran, has exited; that is recorded too.
	if e, err := protocol.ReadExit(c.cfg.Dir); err != nil || e.Signal != int(syscall.SIGKILL) || e.Code != 137 {
		t.Errorf("exit %+v, %v", e, err)
	}
	if err := unix.Kill(st.Pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("init %d after delete: %v", st.Pid, err)
	}
}

func TestKill(t *testing.T) {
	t.Run("SIGKILL", func(t *testing.T) {
		c := newContainer(t, "sleep", "100")
		client, _ := c.start(t)
		ctx := ctxT(t)
		if err := c.run(ctx, client); err != nil {
			t.Fatal(err)
		}
		if err := c.rt.Kill(ctx, c.id, syscall.SIGKILL, true); err != nil {
			t.Fatal(err)
		}
		e, err := client.Wait(ctx)
		if err != nil || e.Code != 137 || e.Signal != 9 || e.OOMKilled {
			t.Errorf("exit %+v, %v", e, err)
		}
	})

	// The init of a PID namespace ignores SIGTERM without a handler: a
	// container in a pod's shared PID namespace gets it.
	t.Run("SIGTERM in a pod's PID namespace", func(t *testing.T) {
		needRoot(t)
		podPid := startPodInit(t)
		c := newContainer(t, "sleep", "100")
		c.spec.Linux.Namespaces[0].Path = fmt.Sprintf("/proc/%d/ns/pid", podPid)
		client, _ := c.start(t)
		ctx := ctxT(t)
		if err := c.run(ctx, client); err != nil {
			t.Fatal(err)
		}
		st, _ := client.State(ctx)
		if nspid := nsPids(st.Pid); len(nspid) != 2 || nspid[1] == 1 {
			t.Errorf("container init NSpid %v, want a pid other than 1 in the pod's namespace", nspid)
		}
		if err := c.rt.Kill(ctx, c.id, syscall.SIGTERM, false); err != nil {
			t.Fatal(err)
		}
		e, err := client.Wait(ctx)
		if err != nil || e.Code != 143 || e.Signal != 15 {
			t.Errorf("exit %+v, %v", e, err)
		}
		if fe, err := protocol.ReadExit(c.cfg.Dir); err != nil || fe.Code != 143 || fe.Signal != 15 {
			t.Errorf("exit file %+v, %v", fe, err)
		}
	})
}

// startPodInit starts a pod init; cleanup kills it and checks it is gone.
func startPodInit(t testing.TB) int {
	t.Helper()
	return startPodInitWith(t, proc.PodInitOptions{})
}

func startPodInitWith(t testing.TB, opts proc.PodInitOptions) int {
	t.Helper()
	pid, err := proc.StartPodInit(shimBinary, "test-pod", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGKILL)
		waitGone(t, pid)
	})
	// The pid namespace exists once the child runs; wait for the exec, and
	// for the init to wait for signals: until it blocks SIGTERM, as a PID
	// namespace's init without a handler, it never sees the signal.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		wchan, _ := os.ReadFile(fmt.Sprintf("/proc/%d/wchan", pid))
		if bytes.Contains(b, []byte("pod-init")) && bytes.Contains(wchan, []byte("sigtimedwait")) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	return pid
}

// nsPids is the NSpid line of a process's status: its pid in each PID
// namespace, outermost first.
func nsPids(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
			var pids []int
			for _, f := range strings.Fields(v) {
				n, _ := strconv.Atoi(f)
				pids = append(pids, n)
			}
			return pids
		}
	}
	return nil
}

// TestPodInitPinsNoHostMount checks that a pod init keeps no copy of the
// host's mounts: a network namespace bind-mounted when it started (another
// pod's) is destroyed, with its veth, once the host unmounts it.
func TestPodInitPinsNoHostMount(t *testing.T) {
	needRoot(t)
	ns := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(ns, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("unshare", "--net="+ns, "true").CombinedOutput(); err != nil {
		t.Fatalf("unshare: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = unix.Unmount(ns, unix.MNT_DETACH) })
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	host := "pt" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", host).Run() })
	startPodInit(t)
	if err := unix.Unmount(ns, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	// The kernel destroys the namespace asynchronously.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := exec.Command("ip", "link", "show", host).Run(); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the veth of an unmounted network namespace stays while a pod init lives: the pod init keeps a copy of the host's mounts")
		}
	}
}

func TestStartPodInit(t *testing.T) {
	needRoot(t)
	pid := startPodInit(t)
	if nspid := nsPids(pid); len(nspid) != 2 || nspid[0] != pid || nspid[1] != 1 {
		t.Errorf("NSpid %v, want [%d 1]", nspid, pid)
	}
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("session %d, want %d", sid, pid)
	}
	if start := proc.StartTime(pid); !proc.IsShim(pid, start) || !proc.IsShim(pid, 0) || proc.IsShim(pid, start+1) {
		t.Errorf("proc.IsShim of the pod init (started at %d) is wrong", start)
	}
	if found := proc.FindPodInits("test-pod"); !slices.Contains(found, pid) || len(proc.FindPodInits("other-pod")) != 0 {
		t.Errorf("proc.FindPodInits found %v, want %d among them", found, pid)
	}
	// It ignores SIGINT and SIGHUP.
	unix.Kill(pid, unix.SIGINT)
	unix.Kill(pid, unix.SIGHUP)
	time.Sleep(100 * time.Millisecond)
	if err := unix.Kill(pid, 0); err != nil {
		t.Errorf("after SIGINT and SIGHUP: %v", err)
	}
	// It reaps orphans of its namespace: a container process whose parent
	// exits is reparented to it.
	c := newContainer(t, "sh", "-c", "sleep 0.1 & sleep 0.1 & sleep 100")
	c.spec.Linux.Namespaces[0].Path = fmt.Sprintf("/proc/%d/ns/pid", pid)
	client, _ := c.start(t)
	ctx := ctxT(t)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	st, _ := client.State(ctx)
	if err := c.rt.Kill(ctx, c.id, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if zombies := zombieChildren(pid); len(zombies) > 0 {
		t.Errorf("pod init (container init was %d) leaves zombies %v", st.Pid, zombies)
	}
}

// TestStartPodInitUserNamespace: a pod init in a user namespace of its own
// runs as the namespace's root (a host uid of the mapping), although the
// binary's directory is root's alone, and the namespace owns its PID,
// network, IPC and UTS namespaces.
func TestStartPodInitUserNamespace(t *testing.T) {
	needRoot(t)
	if fi, err := os.Stat(filepath.Dir(shimBinary)); err != nil || fi.Mode().Perm()&0o001 != 0 {
		t.Fatalf("the test wants the binary in a directory others cannot pass: %v %v", fi.Mode(), err)
	}
	m := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 300000, Size: 65536}}
	pid := startPodInitWith(t, proc.PodInitOptions{UIDMappings: m, GIDMappings: m})
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if !bytes.Contains(status, []byte("Uid:\t300000\t300000\t300000\t300000\n")) || !bytes.Contains(status, []byte("Gid:\t300000\t300000\t300000\t300000\n")) {
		t.Errorf("pod init's ids:\n%s", status)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid)); len(strings.Fields(string(b))) != 3 || strings.Fields(string(b))[1] != "300000" {
		t.Errorf("uid_map %q", b)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/setgroups", pid)); strings.TrimSpace(string(b)) != "allow" {
		t.Errorf("setgroups %q, want allow: containers set their groups", b)
	}
	if nspid := nsPids(pid); len(nspid) != 2 || nspid[1] != 1 {
		t.Errorf("NSpid %v, want PID 1 of a namespace of its own", nspid)
	}
	userns := nsInode(t, fmt.Sprintf("/proc/%d/ns/user", pid))
	if userns == nsInode(t, "/proc/self/ns/user") {
		t.Fatal("the pod init is in the host's user namespace")
	}
	for _, ns := range []string{"pid", "net", "ipc", "uts"} {
		if owner := nsOwner(t, fmt.Sprintf("/proc/%d/ns/%s", pid, ns)); owner != userns {
			t.Errorf("its %s namespace is owned by user namespace %d, want its own %d", ns, owner, userns)
		}
	}
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// nsOwner is the inode of the user namespace that owns the namespace at
// path (ioctl NS_GET_USERNS).
func nsOwner(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_USERNS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func zombieChildren(parent int) []int {
	var z []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		b, err := os.ReadFile(d + "/stat")
		if err != nil {
			continue
		}
		_, rest, _ := strings.Cut(string(b), ") ")
		f := strings.Fields(rest)
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(parent) {
			z = append(z, pid)
		}
	}
	return z
}

func TestShimOutlivesParent(t *testing.T) {
	c := newContainer(t, "sh", "-c", waitGate+"exit 4")
	c.writeSpec(t)
	arg, err := json.Marshal(map[string]any{"Binary": shimBinary, "Config": c.cfg})
	if err != nil {
		t.Fatal(err)
	}
	argFile := filepath.Join(t.TempDir(), "helper.json")
	if err := os.WriteFile(argFile, arg, 0o644); err != nil {
		t.Fatal(err)
	}
	helper := exec.Command(os.Args[0])
	helper.Env = append(os.Environ(), helperEnv+"="+argFile)
	helper.Stderr = os.Stderr
	out, err := helper.Output()
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	shimPid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("helper printed %q", out)
	}
	// Its parent has exited: the shim is now the test's child (the test
	// process is a subreaper), and the test reaps it.
	defer func() {
		if ws := reap(t, shimPid); !ws.Exited() || ws.ExitStatus() != 0 {
			t.Errorf("shim wait status %#x", ws)
		}
	}()
	if ppid := parentOf(shimPid); ppid != os.Getpid() {
		t.Errorf("shim's parent %d, want the test %d", ppid, os.Getpid())
	}

	client, err := Connect(ctxT(t), c.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	st, err := client.State(ctx)
	if err != nil || st.Status != protocol.StatusCreated || st.ShimPid != shimPid {
		t.Fatalf("state %+v, %v", st, err)
	}
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	c.open(t)
	e, err := client.Wait(ctx)
	if err != nil || e.Code != 4 {
		t.Errorf("exit %+v, %v", e, err)
	}
	// Another client, as after another pierd restart.
	client2, err := Connect(ctxT(t), c.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := client2.State(ctx); err != nil || st.Exit == nil || st.Exit.Code != 4 {
		t.Errorf("state %+v, %v", st, err)
	}
	if err := client2.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.rt.Delete(ctx, c.id, false); err != nil {
		t.Fatal(err)
	}
}

func TestExec(t *testing.T) {
	c := newContainer(t, "sleep", "100")
	client, _ := c.start(t)
	ctx := ctxT(t)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}

	r, err := client.Exec(ctx, protocol.ExecRequest{Args: []string{"sh", "-c", `echo "out $GREETING $(pwd) $(id -u):$(id -g)"; echo err >&2; exit 7`}, UID: 1000, GID: 1001})
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Stdout) != "out hello /tmp 1000:1001\n" || string(r.Stderr) != "err\n" || r.ExitCode != 7 || r.TimedOut {
		t.Errorf("exec result %+v (stdout %q, stderr %q)", r, r.Stdout, r.Stderr)
	}

	r, err = client.Exec(ctx, protocol.ExecRequest{Args: []string{"sh", "-c", "echo $A; pwd"}, Env: []string{"PATH=/bin", "A=b"}, Cwd: "/proc"})
	if err != nil {
		t.Fatalf("exec with env and cwd: %v", err)
	}
	if string(r.Stdout) != "b\n/proc\n" || r.ExitCode != 0 {
		t.Errorf("exec with env and cwd: %+v (%q)", r, r.Stdout)
	}

	// Several at once, with a waiter and state calls beside them.
	waited := make(chan error, 1)
	go func() {
		_, err := client.Wait(ctx)
		waited <- err
	}()
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			want := strconv.Itoa(i)
			r, err := client.Exec(ctx, protocol.ExecRequest{Args: []string{"echo", want}})
			if err == nil && string(r.Stdout) != want+"\n" {
				err = fmt.Errorf("exec %d printed %q", i, r.Stdout)
			}
			if _, serr := client.State(ctx); err == nil {
				err = serr
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}

	// Output is capped to fit a 16 MiB message, standard error's share kept.
	r, err = client.Exec(ctx, protocol.ExecRequest{Args: []string{"sh", "-c", "head -c 17000000 /dev/zero; echo done >&2"}})
	if err != nil || len(r.Stdout) != ExecOutputBudget-execStderrShare || string(r.Stderr) != "done\n" || r.ExitCode != 0 {
		t.Errorf("big exec: %d bytes, stderr %q, code %d, %v", len(r.Stdout), r.Stderr, r.ExitCode, err)
	}

	// A timeout kills the process and returns what it printed so far.
	start := time.Now()
	r, err = client.Exec(ctx, protocol.ExecRequest{Args: []string{"sh", "-c", "echo partial; exec sleep 30"}, Timeout: 300 * time.Millisecond})
	if err != nil || !r.TimedOut || string(r.Stdout) != "partial\n" || r.ExitCode != 137 {
		t.Errorf("timed out exec %+v, %v", r, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timed out exec took %v", d)
	}

	_, err = client.Exec(ctx, protocol.ExecRequest{Args: []string{"nosuchcmd"}})
	if err == nil || !strings.Contains(err.Error(), `exec: "nosuchcmd": executable file not found in $PATH`) {
		t.Errorf("exec of a missing command: %v", err)
	}

	select {
	case err := <-waited:
		t.Errorf("wait returned early: %v", err)
	default:
	}
	if err := c.rt.Kill(ctx, c.id, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Error(err)
	}
	if _, err := client.Exec(ctx, protocol.ExecRequest{Args: []string{"true"}}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("exec after the exit: %v", err)
	}
	// No exec pid files are left.
	if m, _ := filepath.Glob(filepath.Join(c.cfg.Dir, "*.pid")); len(m) > 0 {
		t.Errorf("pid files left: %v", m)
	}
}

// A container that writes without pause must not keep the shim from
// answering: its output is read a bufferful at a time, between requests.
func TestAnswersWhileFlooding(t *testing.T) {
	c := newContainer(t, "yes")
	client, _ := c.start(t)
	if err := c.run(ctxT(t), client); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, c.cfg.LogPath)
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := client.State(ctx)
		cancel()
		if err != nil {
			t.Fatalf("state while the container floods its log: %v", err)
		}
		if st.Status != protocol.StatusRunning {
			t.Fatalf("status %q", st.Status)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.Delete(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestAnswersWhileTheRuntimeRuns: the monitor runs no runtime command, so
// it answers and drains the container's output while a slow runtime's
// start or kill runs (the monitor of an older pier ran them itself and
// answered nothing for as long, up to a minute).
func TestAnswersWhileTheRuntimeRuns(t *testing.T) {
	c := newContainer(t, "sh", "-c", "i=0; while :; do echo line$i; i=$((i+1)); sleep 0.01; done")
	slow := filepath.Join(t.TempDir(), "slow-runc")
	script := "#!/bin/sh\nfor a; do case $a in start|kill) sleep 2;; esac; done\nexec " + c.rt.Path + " \"$@\"\n"
	if err := os.WriteFile(slow, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c.rt.Path = slow
	c.cfg.Runtime = *c.rt
	client, _ := c.start(t)
	ctx := ctxT(t)
	check := func(what string, op func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- op() }()
		time.Sleep(200 * time.Millisecond) // the runtime sleeps
		for range 5 {
			begin := time.Now()
			qctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := client.State(qctx)
			cancel()
			if err != nil || time.Since(begin) > 500*time.Millisecond {
				t.Errorf("state while the runtime's %s runs: %v after %v", what, err, time.Since(begin))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := <-done; err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	check("start", func() error { return c.run(ctx, client) })
	before := logSize(t, c.cfg.LogPath)
	check("kill", func() error { return c.rt.Kill(ctx, c.id, syscall.SIGKILL, true) })
	if after := logSize(t, c.cfg.LogPath); after <= before {
		t.Errorf("the log did not grow while the runtime's kill ran: %d, then %d bytes", before, after)
	}
	if e, err := client.Wait(ctx); err != nil || e.Signal != 9 {
		t.Errorf("exit %+v, %v", e, err)
	}
}

// startCounter starts a container that logs line0, line1, ... every 20 ms
// to name in its log directory, and waits for its first line.
func startCounter(t *testing.T, name string) (*testContainer, *Client) {
	t.Helper()
	c := newContainer(t, "sh", "-c", "i=0; while :; do echo line$i; i=$((i+1)); sleep 0.02; done")
	c.cfg.LogPath = filepath.Join(c.cfg.LogDir, name)
	if err := os.MkdirAll(filepath.Dir(c.cfg.LogPath), 0o755); err != nil {
		t.Fatal(err)
	}
	client, _ := c.start(t)
	if err := c.run(ctxT(t), client); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, c.cfg.LogPath)
	return c, client
}

func TestReopenLog(t *testing.T) {
	c, client := startCounter(t, "c.log")
	ctx := ctxT(t)
	rotated := c.cfg.LogPath + ".1"
	if err := os.Rename(c.cfg.LogPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := client.ReopenLog(ctx); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, c.cfg.LogPath)
	// Entries go on where the old file stopped: together, one line each.
	if err := c.rt.Kill(ctx, c.id, syscall.SIGKILL, true); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, f := range []string{rotated, c.cfg.LogPath} {
		for _, e := range readLog(t, f)["stdout"] {
			lines = append(lines, e.s)
		}
	}
	for i, l := range lines {
		if l != "line"+strconv.Itoa(i) {
			t.Fatalf("entry %d is %q", i, l)
		}
	}

	// A log that cannot be reopened is an error; the old file stays.
	os.RemoveAll(filepath.Dir(c.cfg.LogPath))
	if err := client.ReopenLog(ctx); err == nil {
		t.Error("reopen in a missing directory succeeded")
	}
}

// TestReopenLogBeneath: the log is opened beneath the pod's log directory,
// at the first open (Go) and at each reopen (the monitor): a symbolic link
// planted there, where the log goes or on the way, is refused, and the file
// it points at is left alone.
func TestReopenLogBeneath(t *testing.T) {
	outside := t.TempDir()
	hostFile := filepath.Join(outside, "host-file")
	if err := os.WriteFile(hostFile, []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	untouched := func(when string) {
		t.Helper()
		if b, _ := os.ReadFile(hostFile); string(b) != "host\n" {
			t.Errorf("%s: the host file was written: %q", when, b)
		}
		if entries, _ := os.ReadDir(outside); len(entries) != 1 {
			t.Errorf("%s: made outside the log directory: %v", when, entries)
		}
	}

	// At the first open: the shim's create fails.
	c := newContainer(t, "true")
	c.writeSpec(t)
	os.Symlink(hostFile, c.cfg.LogPath)
	if client, pid, err := Start(ctxT(t), shimBinary, c.cfg); err == nil {
		t.Error("a shim started with a symbolic link as the log")
		client.Delete(ctxT(t))
		waitGone(t, pid)
	} else if !strings.Contains(err.Error(), "open the container's log") {
		t.Errorf("start with a symbolic link as the log: %v", err)
	}
	untouched("start")

	// At a reopen: the monitor refuses, and goes on with the old file.
	c, client := startCounter(t, "sub/c.log")
	sub := filepath.Dir(c.cfg.LogPath)
	ctx := ctxT(t)
	rotated := c.cfg.LogPath + ".1"
	os.Rename(c.cfg.LogPath, rotated)
	os.Symlink(hostFile, c.cfg.LogPath)
	if err := client.ReopenLog(ctx); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("reopen through a symbolic link: %v", err)
	}
	os.Remove(c.cfg.LogPath)
	os.Rename(sub, sub+".old")
	os.Symlink(outside, sub)
	if err := client.ReopenLog(ctx); err == nil {
		t.Error("reopen through a symbolic link to a directory succeeded")
	}
	untouched("reopen")
	// The output still goes to the file in use.
	old := filepath.Join(sub+".old", "c.log.1")
	for size, deadline := logSize(t, old), time.Now().Add(10*time.Second); logSize(t, old) <= size; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the log in use stopped growing after a refused reopen")
		}
	}
	// Once the directory is a directory again, the reopen succeeds.
	os.Remove(sub)
	os.Rename(sub+".old", sub)
	if err := client.ReopenLog(ctx); err != nil {
		t.Fatal(err)
	}
	waitForLog(t, c.cfg.LogPath)
	untouched("end")
}

func waitForLog(t testing.TB, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing written to %s", path)
}

func TestOOM(t *testing.T) {
	c := newContainer(t, "sh", "-c", "x=a; while :; do x=$x$x; done")
	limit := int64(16 << 20)
	c.spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	client, _ := c.start(t)
	ctx := ctxT(t)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	e, err := client.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !e.OOMKilled || e.Code != 137 || e.Signal != 9 {
		t.Errorf("exit %+v, want OOM killed", e)
	}
	if fe, err := protocol.ReadExit(c.cfg.Dir); err != nil || !fe.OOMKilled {
		t.Errorf("exit file %+v, %v", fe, err)
	}
}

func TestCommandNotFound(t *testing.T) {
	c := newContainer(t, "nosuchcmd")
	c.writeSpec(t)
	ctx := ctxT(t)
	_, _, err := Start(ctx, shimBinary, c.cfg)
	if err == nil {
		t.Fatal("started a container without its command")
	}
	want := `exec: "nosuchcmd": executable file not found in $PATH`
	if !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "runc create "+c.id+": ") {
		t.Errorf("error %q, want runc's message %q", err, want)
	}
	t.Logf("error: %v", err)
	// The shim has exited and left nothing (cleanup checks the runtime and
	// cgroups).
	if _, err := os.Stat(c.cfg.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left: %v", err)
	}
	if _, err := protocol.ReadExit(c.cfg.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("exit file: %v", err)
	}
	if shims := processesOf(c.cfg.Dir); len(shims) > 0 {
		time.Sleep(time.Second)
		if shims := processesOf(c.cfg.Dir); len(shims) > 0 {
			t.Errorf("shim processes left: %v", shims)
		}
	}
}

// processesOf lists live (not zombie) processes whose command line holds s.
func processesOf(s string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/cmdline")
		if err == nil && bytes.Contains(b, []byte(s)) {
			pid, _ := strconv.Atoi(filepath.Base(d))
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestShimKilled(t *testing.T) {
	c := newContainer(t, "sleep", "100")
	c.writeSpec(t)
	ctx := ctxT(t)
	client, shimPid, err := Start(ctx, shimBinary, c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	st, err := client.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		_, err := client.Wait(ctx)
		waited <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := unix.Kill(shimPid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; !errors.Is(err, ErrUnavailable) {
		t.Errorf("wait: %v, want ErrUnavailable", err)
	}
	waitGone(t, shimPid)
	if _, err := protocol.ReadExit(c.cfg.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("exit file: %v", err)
	}
	if _, err := Connect(ctxT(t), c.cfg.Socket); !errors.Is(err, ErrUnavailable) {
		t.Errorf("connect: %v", err)
	}
	// The container runs on, orphaned: the test process inherited its init.
	if err := unix.Kill(st.Pid, 0); err != nil {
		t.Errorf("container init: %v", err)
	}
	if ppid := parentOf(st.Pid); ppid != os.Getpid() {
		t.Errorf("orphaned init's parent %d", ppid)
	}
	// What pierd does with it.
	if err := c.rt.Delete(ctx, c.id, true); err != nil {
		t.Fatal(err)
	}
	reap(t, st.Pid)
}

// TestPodInitEndsOnSIGTERM: a shutdown's SIGTERM ends the pod init, and
// with it the pod's PID namespace, at once: a node shutdown never waits
// for its stop timeout on a pod.
func TestPodInitEndsOnSIGTERM(t *testing.T) {
	needRoot(t)
	pid := startPodInit(t)
	start := time.Now()
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	t.Logf("pod init gone %v after SIGTERM", time.Since(start))
}

// TestSIGTERM: SIGTERM to a shim (systemd's at shutdown) kills its
// container, records the exit and ends the shim, so that a node shutdown
// never waits for its stop timeout and the exit is not lost.
func TestSIGTERM(t *testing.T) {
	for _, started := range []bool{true, false} {
		t.Run(map[bool]string{true: "running", false: "created"}[started], func(t *testing.T) {
			// A PID namespace's init ignores SIGTERM: only a kill ends it.
			c := newContainer(t, "sleep", "100")
			c.writeSpec(t)
			ctx := ctxT(t)
			client, shimPid, err := Start(ctx, shimBinary, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if started {
				if err := c.run(ctx, client); err != nil {
					t.Fatal(err)
				}
			}
			st, err := client.State(ctx)
			if err != nil {
				t.Fatal(err)
			}
			waited := make(chan *protocol.Exit, 1)
			go func() {
				exit, _ := client.Wait(ctx)
				waited <- exit
			}()
			time.Sleep(100 * time.Millisecond)
			begin := time.Now()
			if err := unix.Kill(shimPid, unix.SIGTERM); err != nil {
				t.Fatal(err)
			}
			waitGone(t, shimPid)
			t.Logf("shim gone %v after SIGTERM", time.Since(begin))
			if err := unix.Kill(st.Pid, 0); err == nil {
				t.Errorf("container init %d survived its shim's SIGTERM", st.Pid)
			}
			exit, err := protocol.ReadExit(c.cfg.Dir)
			if err != nil || exit.Signal != int(unix.SIGKILL) {
				t.Errorf("exit file after SIGTERM: %+v, %v", exit, err)
			}
			if w := <-waited; w == nil || w.Signal != int(unix.SIGKILL) {
				t.Errorf("wait answered %+v", w)
			}
			if err := c.rt.Delete(ctx, c.id, true); err != nil && !errors.Is(err, oci.ErrNotFound) {
				t.Fatal(err)
			}
		})
	}
}

func TestProtocol(t *testing.T) {
	c := newContainer(t, "sleep", "100")
	client, _ := c.start(t)
	call := func(req string) protocol.Response {
		t.Helper()
		conn, err := net.Dial("unix", c.cfg.Socket)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, req+"\n"); err != nil {
			t.Fatal(err)
		}
		var resp protocol.Response
		if err := json.NewDecoder(conn).Decode(&resp); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if r := call(`{"v":2,"op":"state"}`); r.Code != protocol.CodeVersion || !strings.Contains(r.Error, "protocol version 2 not supported") || r.V != protocol.Version {
		t.Errorf("version 2: %+v", r)
	}
	if r := call(`{"op":"state"}`); r.Code != protocol.CodeVersion {
		t.Errorf("no version: %+v", r)
	}
	if r := call(`{"v":1,"op":"nope"}`); !strings.Contains(r.Error, `unknown operation "nope"`) {
		t.Errorf("unknown op: %+v", r)
	}
	if r := call(`{"v":1,"op":"state"}`); r.Error != "" || r.State == nil || r.State.Status != protocol.StatusCreated {
		t.Errorf("state: %+v", r)
	}
	// A waiter that hangs up does not hold the shim.
	conn, err := net.Dial("unix", c.cfg.Socket)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(conn, `{"v":1,"op":"wait"}`+"\n")
	conn.Close()
	wctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := client.Wait(wctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("wait with a deadline: %v", err)
	}
}

// TestShimMemory runs 10 shims and reports their proportional set size.
func TestShimMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const n = 10
	var pids []int
	var clients []*Client
	for range n {
		c := newContainer(t, "sleep", "1000")
		client, pid := c.start(t)
		if err := c.run(ctxT(t), client); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
		clients = append(clients, client)
	}
	// Steady state: a few exec probes and state calls have run.
	for _, client := range clients {
		for range 5 {
			if _, err := client.Exec(ctxT(t), protocol.ExecRequest{Args: []string{"echo", "hi"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := client.State(ctxT(t)); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(500 * time.Millisecond)
	var total, rss, private int
	for _, pid := range pids {
		m := smapsRollup(t, pid)
		total += m["Pss"]
		rss += m["Rss"]
		private += m["Private_Dirty"]
	}
	fi, _ := os.Stat(shimBinary)
	t.Logf("%d shims: Pss %d KiB each (Rss %d KiB, Private_Dirty %d KiB); binary %d KiB",
		n, total/n, rss/n, private/n, fi.Size()>>10)
	// The target: under 1 MiB per container.
	if total/n > 1<<10 {
		t.Errorf("Pss %d KiB per shim", total/n)
	}
}

// smapsRollup reads /proc/pid/smaps_rollup, in KiB.
func smapsRollup(t testing.TB, pid int) map[string]int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			n, _ := strconv.Atoi(f[1])
			m[strings.TrimSuffix(f[0], ":")] = n
		}
	}
	return m
}

// Tests below need no root.

// maxLogLine is the longest content of a CRI log entry (MAX_LINE of the
// monitor).
const maxLogLine = 16 << 10

func TestCopyLog(t *testing.T) {
	// The monitor, run by hand: its "init" is this process (not its child:
	// never reaped), its stderr pipe is ours.
	run := func(logPath string) (w *os.File, client *Client, stop func()) {
		dir := t.TempDir()
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "sock"), Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false) // the monitor listens there
		defer ln.Close()
		lf, err := ln.File()
		if err != nil {
			t.Fatal(err)
		}
		defer lf.Close()
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		cmd := exec.Command(filepath.Join(filepath.Dir(shimBinary), "pier-shim-monitor"), "monitor", "id=test", "dir="+dir,
			"socket="+filepath.Join(dir, "sock"), "log="+logPath, "pid="+strconv.Itoa(os.Getpid()),
			"helper=/bin/false", "runtime=/bin/false", "listen-fd=3", "stderr-fd=4")
		cmd.ExtraFiles = []*os.File{lf, r}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return w, &Client{socket: filepath.Join(dir, "sock")}, func() {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}

	logPath := filepath.Join(t.TempDir(), "log")
	w, client, stop := run(logPath)
	defer stop()
	// Write in odd chunks: entries follow lines, not writes.
	input := "a\n\nb" + strings.Repeat("x", maxLogLine) + "\n" + strings.Repeat("y", maxLogLine-1) + "\n" +
		strings.Repeat("z", 2*maxLogLine+1) + "\nend"
	for rest := input; rest != ""; {
		n := min(len(rest), 1000)
		w.WriteString(rest[:n])
		rest = rest[n:]
	}
	w.Close()
	want := []string{"F a", "F ", "P b" + strings.Repeat("x", maxLogLine-1), "F x", "F y*16383", "P z*16384", "P z*16384", "F z", "P end"}
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		// A reader may see an entry half-written (a write to a file is not
		// atomic for readers): read again once the file ends a line.
		if b, _ := os.ReadFile(logPath); len(b) == 0 || b[len(b)-1] != '\n' {
			continue
		}
		got = nil
		for _, e := range readLog(t, logPath)["stderr"] {
			got = append(got, e.tag+" "+summarize(e.s))
		}
		if len(got) >= len(want) {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("entries\n got %.300q\nwant %.300q", got, want)
	}
	// A monitor started with the older command line (log= alone, as
	// pier-shim passed it before log-dir= and log-name=) reopens its log.
	os.Rename(logPath, logPath+".1")
	if err := client.ReopenLog(ctxT(t)); err != nil {
		t.Errorf("reopen with log= alone: %v", err)
	} else if _, err := os.Stat(logPath); err != nil {
		t.Errorf("reopen with log= alone: %v", err)
	}

	// Without a log file, output is drained and dropped: this write of
	// more than a pipe holds returns.
	w, _, stop2 := run("")
	defer stop2()
	done := make(chan error, 1)
	go func() {
		_, err := w.WriteString(strings.Repeat("dropped\n", 100000))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(10 * time.Second):
		t.Error("the monitor does not drain an output without a log")
	}
	w.Close()

	// The older command line (log= alone, as above) opens the log beneath
	// its own directory too: never through a symbolic link.
	target := filepath.Join(t.TempDir(), "target")
	link := filepath.Join(t.TempDir(), "link.log")
	os.WriteFile(target, nil, 0o644)
	os.Symlink(target, link)
	w, _, stop3 := run(link)
	defer stop3()
	w.WriteString("through the link\n")
	w.Close()
	time.Sleep(200 * time.Millisecond)
	if b, _ := os.ReadFile(target); len(b) > 0 {
		t.Errorf("the monitor wrote through a symbolic link: %q", b)
	}
}

func TestStartErrors(t *testing.T) {
	ctx := context.Background()
	if _, _, err := Start(ctx, "/nonexistent/pier-shim", protocol.Config{}); err == nil {
		t.Error("empty config accepted")
	}
	dir := t.TempDir()
	cfg := protocol.Config{ID: "x", Bundle: dir, Dir: filepath.Join(dir, "shim"), Socket: filepath.Join(dir, "s.sock")}
	if _, _, err := Start(ctx, "/nonexistent/pier-shim", cfg); err == nil {
		t.Error("missing binary")
	}
	// A shim that dies before its handshake: its log explains.
	fake := filepath.Join(dir, "fake-shim")
	os.WriteFile(fake, []byte("#!/bin/sh\necho 'pier-shim: something broke' >&2\nexit 1\n"), 0o755)
	if _, _, err := Start(ctx, fake, cfg); err == nil || !strings.Contains(err.Error(), "something broke") {
		t.Errorf("fake shim: %v", err)
	}
	// A shim without a bundle reports why.
	_, _, err := Start(ctx, shimBinary, cfg)
	if err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("no bundle: %v", err)
	}
	if _, err := Connect(ctxT(t), cfg.Socket); !errors.Is(err, ErrUnavailable) {
		t.Errorf("connect to nothing: %v", err)
	}
}

// readUntil reads f until what it read contains want, and returns that.
func readUntil(t testing.TB, f *os.File, want string) string {
	t.Helper()
	f.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer f.SetReadDeadline(time.Time{})
	var got []byte
	buf := make([]byte, 4096)
	for !strings.Contains(string(got), want) {
		n, err := f.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("reading %s for %q: %v; got %q", f.Name(), want, err, got)
		}
	}
	return string(got)
}

func attach(t testing.TB, client *Client, r protocol.AttachRequest) *Attachment {
	t.Helper()
	a, err := client.Attach(ctxT(t), r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func logSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestAttach(t *testing.T) {
	c := newContainer(t, "sh", "-c", "i=0; while :; do echo line$i; echo err$i >&2; i=$((i+1)); sleep 0.1; done")
	client, shimPid := c.start(t)
	ctx := ctxT(t)
	fds := monitorFdCount(t, client, shimPid)
	// Before the start: nothing is lost.
	a1 := attach(t, client, protocol.AttachRequest{Stdin: true, Stdout: true, Stderr: true})
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	a2 := attach(t, client, protocol.AttachRequest{Stdout: true})
	if a1.Stdin != nil || a2.Stderr != nil || a2.Stdin != nil {
		t.Errorf("files not asked for or not open: %+v %+v", a1, a2)
	}
	if err := a1.Resize(80, 24); err == nil {
		t.Error("resize without a terminal")
	}
	readUntil(t, a1.Stdout, "line0\nline1\nline2\n")
	readUntil(t, a1.Stderr, "err0\nerr1\nerr2\n")
	if got := readUntil(t, a2.Stdout, "\n"); !regexp.MustCompile(`^(line\d+\n)+$`).MatchString(got) {
		t.Errorf("second attacher read %q", got)
	}
	readUntil(t, a2.Stdout, "line")
	a1.Close()
	a2.Close()
	waitFds(t, shimPid, fds)
	size := logSize(t, c.cfg.LogPath)
	time.Sleep(300 * time.Millisecond)
	if logSize(t, c.cfg.LogPath) <= size {
		t.Error("the log stopped after the attachments closed")
	}
	if out := readLog(t, c.cfg.LogPath)["stdout"]; len(out) < 3 || out[0].s != "line0" {
		t.Errorf("log: %v", out)
	}
	if err := c.rt.Kill(ctx, c.id, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Attach(ctx, protocol.AttachRequest{Stdout: true}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("attach after the exit: %v", err)
	}
}

// TestAttachSlow: an attacher that never reads does not hold the container.
func TestAttachSlow(t *testing.T) {
	c := newContainer(t, "sh", "-c", "while :; do echo 0123456789012345678901234567890123456789012345678901234567890123456789; done")
	client, _ := c.start(t)
	ctx := ctxT(t)
	slow := attach(t, client, protocol.AttachRequest{Stdout: true, Stderr: true})
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for logSize(t, c.cfg.LogPath) < 1<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("the log does not grow past %d bytes", logSize(t, c.cfg.LogPath))
		}
		time.Sleep(20 * time.Millisecond)
	}
	size := logSize(t, c.cfg.LogPath)
	time.Sleep(200 * time.Millisecond)
	if logSize(t, c.cfg.LogPath) <= size {
		t.Error("the log stopped growing")
	}
	// The attacher got what fit in its pipe.
	if got := readUntil(t, slow.Stdout, "\n"); !strings.HasPrefix(got, "0123456789") {
		t.Errorf("slow attacher read %.100q", got)
	}
	if err := client.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	// The container's end is the end of the attachment's output.
	slow.Stdout.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, slow.Stdout); err != nil {
		t.Errorf("reading to the end: %v", err)
	}
}

func TestAttachStdin(t *testing.T) {
	c := newContainer(t, "cat")
	c.cfg.Stdin, c.cfg.StdinOnce = true, true
	client, _ := c.start(t)
	ctx := ctxT(t)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	a := attach(t, client, protocol.AttachRequest{Stdin: true, Stdout: true, Stderr: true})
	if a.Stdin == nil {
		t.Fatal("no stdin")
	}
	if _, err := a.Stdin.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	if got := readUntil(t, a.Stdout, "\n"); got != "hello\n" {
		t.Errorf("read %q", got)
	}
	// Another attacher sees the output, without stdin once the first ends.
	b := attach(t, client, protocol.AttachRequest{Stdout: true})
	if _, err := a.Stdin.WriteString("again\n"); err != nil {
		t.Fatal(err)
	}
	readUntil(t, b.Stdout, "again\n")
	select {
	case <-time.After(200 * time.Millisecond):
	case err := <-waitC(client):
		t.Fatalf("cat exited before the end of stdin: %v", err)
	}
	a.Close()
	e, err := client.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e.Code != 0 {
		t.Errorf("cat exited %+v", e)
	}
	if _, err := client.Attach(ctx, protocol.AttachRequest{Stdin: true}); !errors.Is(err, ErrNotRunning) {
		t.Errorf("attach after the exit: %v", err)
	}
	if out := readLog(t, c.cfg.LogPath)["stdout"]; len(out) != 2 || out[0].s != "hello" || out[1].s != "again" {
		t.Errorf("log %v", out)
	}
}

func waitC(client *Client) <-chan error {
	ch := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := client.Wait(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			return
		}
		ch <- err
	}()
	return ch
}

func TestAttachTty(t *testing.T) {
	c := newContainer(t, "sh")
	c.spec.Process.Terminal = true
	c.cfg.Tty, c.cfg.Stdin = true, true
	client, _ := c.start(t)
	ctx := ctxT(t)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	watcher := attach(t, client, protocol.AttachRequest{Stdin: true, Stdout: true, Stderr: true})
	a := attach(t, client, protocol.AttachRequest{Stdin: true, Stdout: true, Stderr: true})
	if a.Stdin == nil || a.Stderr != nil {
		t.Fatalf("tty attachment %+v", a)
	}
	if err := a.Resize(90, 25); err != nil {
		t.Fatal(err)
	}
	// The terminal echoes the input: "hi" comes only from echo.
	if _, err := a.Stdin.WriteString("stty size; echo h''i; exit 3\n"); err != nil {
		t.Fatal(err)
	}
	readUntil(t, a.Stdout, "25 90\r\n")
	readUntil(t, watcher.Stdout, "\nhi\r\n")
	e, err := client.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e.Code != 3 {
		t.Errorf("exit %+v", e)
	}
	var hi bool
	for _, l := range readLog(t, c.cfg.LogPath)["stdout"] {
		if strings.HasSuffix(l.s, "\r") {
			t.Errorf("log entry with \\r: %q", l.s)
		}
		hi = hi || l.s == "hi"
	}
	if !hi {
		t.Errorf("no hi in the log: %v", readLog(t, c.cfg.LogPath))
	}
}

// TestAttachTtyStdinOnce: the end of the first attachment with stdin types
// ^D: cat, reading its terminal, gets the end of its input.
func TestAttachTtyStdinOnce(t *testing.T) {
	c := newContainer(t, "cat")
	c.spec.Process.Terminal = true
	c.cfg.Tty, c.cfg.Stdin, c.cfg.StdinOnce = true, true, true
	client, _ := c.start(t)
	ctx := ctxT(t)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	a := attach(t, client, protocol.AttachRequest{Stdin: true, Stdout: true})
	a.Stdin.WriteString("ready\n")
	readUntil(t, a.Stdout, "ready\r\nready\r\n") // the terminal's echo, then cat's
	a.Close()
	e, err := client.Wait(ctx)
	if err != nil || e.Code != 0 {
		t.Errorf("exit %+v, %v", e, err)
	}
	b, err := client.Attach(ctx, protocol.AttachRequest{Stdin: true})
	if err == nil {
		b.Close()
		t.Error("attached after the exit")
	}
}

func TestExecStream(t *testing.T) {
	c := newContainer(t, "sleep", "100")
	client, shimPid := c.start(t)
	ctx := ctxT(t)
	fds := monitorFdCount(t, client, shimPid)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	var pipes [6]*os.File // stdin r, w; stdout r, w; stderr r, w
	for i := 0; i < 6; i += 2 {
		var err error
		if pipes[i], pipes[i+1], err = os.Pipe(); err != nil {
			t.Fatal(err)
		}
		defer pipes[i].Close()
		defer pipes[i+1].Close()
	}
	p, err := client.ExecStream(ctx, ExecStreamRequest{
		ExecRequest: protocol.ExecRequest{Args: []string{"sh", "-c", "cat; echo err >&2; exit 5"}},
		Stdin:       pipes[0], Stdout: pipes[3], Stderr: pipes[5],
	})
	if err != nil {
		t.Fatal(err)
	}
	pipes[0].Close()
	pipes[3].Close()
	pipes[5].Close()
	if p.Pty() != nil || p.Resize(80, 24) == nil {
		t.Error("a terminal without tty")
	}
	pipes[1].WriteString("data\n")
	pipes[1].Close()
	out, err := io.ReadAll(pipes[2])
	if err != nil || string(out) != "data\n" {
		t.Errorf("stdout %q, %v", out, err)
	}
	errOut, err := io.ReadAll(pipes[4])
	if err != nil || string(errOut) != "err\n" {
		t.Errorf("stderr %q, %v", errOut, err)
	}
	if code, err := p.Wait(); code != 5 || err != nil {
		t.Errorf("exit %d, %v", code, err)
	}

	// Without files: /dev/null.
	p, err = client.ExecStream(ctx, ExecStreamRequest{ExecRequest: protocol.ExecRequest{Args: []string{"sh", "-c", "cat; echo out; echo err >&2; exit 1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(); code != 1 || err != nil {
		t.Errorf("exit %d, %v", code, err)
	}

	_, err = client.ExecStream(ctx, ExecStreamRequest{ExecRequest: protocol.ExecRequest{Args: []string{"nosuchcmd"}}})
	if err == nil || !strings.Contains(err.Error(), `exec: "nosuchcmd": executable file not found in $PATH`) {
		t.Errorf("exec of a missing command: %v", err)
	}
	if m, _ := filepath.Glob(filepath.Join(c.cfg.Dir, "*.pid")); len(m) > 0 {
		t.Errorf("pid files left: %v", m)
	}
	waitFds(t, shimPid, fds)
}

// monitorFdCount counts the shim's descriptors once it is the monitor:
// once it answers.
func monitorFdCount(t testing.TB, client *Client, pid int) int {
	t.Helper()
	if _, err := client.State(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return fdCount(t, pid)
}

func fdCount(t testing.TB, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// waitFds waits until process pid has at most n file descriptors open (it
// drops those of a closed connection soon after).
func waitFds(t testing.TB, pid, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for fdCount(t, pid) > n {
		if time.Now().After(deadline) {
			out, _ := exec.Command("ls", "-l", fmt.Sprintf("/proc/%d/fd", pid)).CombinedOutput()
			t.Errorf("shim has %d file descriptors open, not %d or fewer:\n%s", fdCount(t, pid), n, out)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestExecStreamTty(t *testing.T) {
	c := newContainer(t, "sleep", "100")
	client, _ := c.start(t)
	ctx := ctxT(t)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	p, err := client.ExecStream(ctx, ExecStreamRequest{
		ExecRequest: protocol.ExecRequest{Args: []string{"sh", "-c", "stty size; read x; stty size; exit 2"}},
		Tty:         true, Width: 100, Height: 30,
	})
	if err != nil {
		t.Fatal(err)
	}
	pty := p.Pty()
	if pty == nil {
		t.Fatal("no pty")
	}
	defer pty.Close()
	readUntil(t, pty, "30 100\r\n")
	if err := p.Resize(120, 40); err != nil {
		t.Fatal(err)
	}
	pty.WriteString("\n")
	readUntil(t, pty, "40 120\r\n")
	if code, err := p.Wait(); code != 2 || err != nil {
		t.Errorf("exit %d, %v", code, err)
	}
	if m, _ := filepath.Glob(filepath.Join(c.cfg.Dir, "console-*")); len(m) > 0 {
		t.Errorf("console sockets left: %v", m)
	}
}

// TestExecStreamGone: a process whose client hangs up or kills it is gone.
func TestExecStreamGone(t *testing.T) {
	c := newContainer(t, "sleep", "100")
	client, shimPid := c.start(t)
	ctx := ctxT(t)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	fds := fdCount(t, shimPid)
	for _, tty := range []bool{false, true} {
		p, err := client.ExecStream(ctx, ExecStreamRequest{ExecRequest: protocol.ExecRequest{Args: []string{"sleep", "1000"}}, Tty: tty})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.Pid())); err != nil {
			t.Fatalf("exec'd process: %v", err)
		}
		p.sc.conn.Close() // pierd's client vanished
		if p.Pty() != nil {
			p.Pty().Close()
		}
		waitGone(t, p.Pid())
	}

	p, err := client.ExecStream(ctx, ExecStreamRequest{ExecRequest: protocol.ExecRequest{Args: []string{"sleep", "1000"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if code, err := p.Wait(); code != 137 || err != nil {
		t.Errorf("killed: exit %d, %v", code, err)
	}
	waitGone(t, p.Pid())
	if err := p.Kill(); err != nil {
		t.Errorf("kill after wait: %v", err)
	}
	waitFds(t, shimPid, fds)
}
