package oci

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// fakeScript stands in for runc. It records its arguments in $dir/args (one
// a line), the --process file in $dir/process.json and the --resources
// file in $dir/resources.json, appends $dir/log.in
// to its --log file, writes $dir/stdout.in and $dir/stderr.in to its
// output and error, runs $dir/run.in if present, and exits with the code in
// $dir/rc (0 without it).
const fakeScript = `#!/bin/sh
dir=%DIR%
printf '%s\n' "$@" > "$dir/args"
log= process= resources= prev=
for a in "$@"; do
	case "$prev" in
	--log) log=$a ;;
	--process) process=$a ;;
	--resources) resources=$a ;;
	esac
	prev=$a
done
[ -n "$process" ] && cp "$process" "$dir/process.json"
[ -n "$resources" ] && cp "$resources" "$dir/resources.json"
[ -f "$dir/log.in" ] && [ -n "$log" ] && cat "$dir/log.in" >> "$log"
[ -f "$dir/stdout.in" ] && cat "$dir/stdout.in"
[ -f "$dir/stderr.in" ] && cat "$dir/stderr.in" >&2
[ -f "$dir/run.in" ] && . "$dir/run.in"
exit $(cat "$dir/rc" 2>/dev/null || echo 0)
`

type fake struct {
	*Runtime
	dir string
}

func newFake(t *testing.T) *fake {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "fakert")
	script := strings.ReplaceAll(fakeScript, "%DIR%", dir)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// The root is under the test's directory: the runtime's temporary
	// files go beside it (Runtime.jsonFile), and a test leaves nothing.
	return &fake{&Runtime{Name: "fake", Path: path, Root: filepath.Join(dir, "run", "fake")}, dir}
}

func (f *fake) set(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// args returns the recorded arguments with the temporary file paths
// replaced by LOG, PROCESS and RESOURCES.
func (f *fake) args(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "args"))
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	for i := 1; i < len(args); i++ {
		switch args[i-1] {
		case "--log":
			args[i] = "LOG"
		case "--process":
			args[i] = "PROCESS"
		case "--resources":
			args[i] = "RESOURCES"
		}
	}
	return args
}

func TestCommandLines(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		call func(r *Runtime) error
		want []string
	}{
		{"create", func(r *Runtime) error {
			return r.Create(ctx, "c1", "/b", CreateOpts{})
		}, []string{"create", "--bundle", "/b", "c1"}},
		{"create all options", func(r *Runtime) error {
			return r.Create(ctx, "c1", "/b", CreateOpts{PidFile: "/p", ConsoleSocket: "/s", NoPivot: true})
		}, []string{"create", "--bundle", "/b", "--pid-file", "/p", "--console-socket", "/s", "--no-pivot", "c1"}},
		{"start", func(r *Runtime) error { return r.Start(ctx, "c1") }, []string{"start", "c1"}},
		{"kill", func(r *Runtime) error {
			return r.Kill(ctx, "c1", syscall.SIGTERM, false)
		}, []string{"kill", "c1", "15"}},
		{"kill all", func(r *Runtime) error {
			return r.Kill(ctx, "c1", syscall.SIGKILL, true)
		}, []string{"kill", "--all", "c1", "9"}},
		{"delete", func(r *Runtime) error { return r.Delete(ctx, "c1", false) }, []string{"delete", "c1"}},
		{"delete force", func(r *Runtime) error { return r.Delete(ctx, "c1", true) }, []string{"delete", "--force", "c1"}},
		{"exec", func(r *Runtime) error {
			return r.Exec(ctx, "c1", &specs.Process{Args: []string{"ls"}}, ExecOpts{PidFile: "/p"})
		}, []string{"exec", "--process", "PROCESS", "--detach", "--pid-file", "/p", "c1"}},
		{"exec console", func(r *Runtime) error {
			return r.Exec(ctx, "c1", &specs.Process{Args: []string{"sh"}, Terminal: true}, ExecOpts{ConsoleSocket: "/s"})
		}, []string{"exec", "--process", "PROCESS", "--detach", "--console-socket", "/s", "c1"}},
		{"update", func(r *Runtime) error {
			return r.Update(ctx, "c1", &specs.LinuxResources{})
		}, []string{"update", "--resources", "RESOURCES", "c1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			if err := tt.call(f.Runtime); err != nil {
				t.Fatal(err)
			}
			global := []string{"--root", f.Root, "--log", "LOG", "--log-format", "json"}
			if got, want := f.args(t), append(global, tt.want...); !slices.Equal(got, want) {
				t.Errorf("args\n got %q\nwant %q", got, want)
			}
		})
	}

	t.Run("no root", func(t *testing.T) {
		f := newFake(t)
		f.Root = ""
		if err := f.Start(ctx, "c1"); err != nil {
			t.Fatal(err)
		}
		if got, want := f.args(t), []string{"--log", "LOG", "--log-format", "json", "start", "c1"}; !slices.Equal(got, want) {
			t.Errorf("args %q, want %q", got, want)
		}
	})
}

func TestExecProcessFile(t *testing.T) {
	f := newFake(t)
	p := &specs.Process{Args: []string{"/bin/echo", "hi"}, Cwd: "/", Env: []string{"A=b"}}
	if err := f.Exec(context.Background(), "c1", p, ExecOpts{}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(f.dir, "process.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got specs.Process
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Args, p.Args) || got.Cwd != "/" || !slices.Equal(got.Env, p.Env) {
		t.Errorf("process file %s", b)
	}
}

// TestUpdateResourcesFile: the runtime reads the new limits, as an OCI
// LinuxResources, from the file it is given, which is gone afterwards.
func TestUpdateResourcesFile(t *testing.T) {
	f := newFake(t)
	quota, limit := int64(40000), int64(96<<20)
	res := &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota}, Memory: &specs.LinuxMemory{Limit: &limit}, Unified: map[string]string{"memory.oom.group": "1"}}
	if err := f.Update(context.Background(), "c1", res); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(f.dir, "resources.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got specs.LinuxResources
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.CPU == nil || *got.CPU.Quota != quota || got.Memory == nil || *got.Memory.Limit != limit || got.Unified["memory.oom.group"] != "1" {
		t.Errorf("the runtime read %s, want %+v", b, res)
	}
	if left, _ := filepath.Glob(filepath.Join(f.tempDir(), "pier-oci-resources-*")); len(left) > 0 {
		t.Errorf("the resources file is left behind: %q", left)
	}
}

func TestState(t *testing.T) {
	f := newFake(t)
	f.set(t, "stdout.in", `{"ociVersion":"1.0.2-dev","id":"c1","pid":42,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"2026-01-02T03:04:05Z","owner":""}`)
	s, err := f.State(context.Background(), "c1")
	if err != nil {
		t.Fatal(err)
	}
	if want := (State{ID: "c1", Status: "running", Pid: 42, Bundle: "/b"}); *s != want {
		t.Errorf("state %+v, want %+v", *s, want)
	}
	if got, want := f.args(t)[6:], []string{"state", "c1"}; !slices.Equal(got, want) {
		t.Errorf("args %q, want %q", got, want)
	}

	f.set(t, "stdout.in", "not json")
	if _, err := f.State(context.Background(), "c1"); err == nil || !strings.HasPrefix(err.Error(), "fake state c1: cannot parse output") {
		t.Errorf("bad output: err %v", err)
	}
}

func TestVersion(t *testing.T) {
	f := newFake(t)
	f.set(t, "stdout.in", "fakert version 1.8.1\ncommit: f8a096be\nspec: 1.0.0\n")
	v, err := f.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v != "1.8.1" {
		t.Errorf("version %q", v)
	}
	if got := f.args(t); !slices.Equal(got, []string{"--version"}) {
		t.Errorf("args %q", got)
	}
	f.set(t, "stdout.in", "fakert 2\n")
	if v, _ := f.Version(context.Background()); v != "fakert 2" {
		t.Errorf("odd version %q", v)
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name         string
		op           func(r *Runtime) error
		log, stderr  string
		rc           string
		want         string
		wantNotFound bool
	}{{
		name:   "runc missing container",
		op:     func(r *Runtime) error { return r.Kill(ctx, "c1", syscall.SIGKILL, false) },
		log:    `{"level":"error","msg":"container does not exist","time":"2026-01-02T03:04:05Z"}` + "\n",
		stderr: "container does not exist\n", rc: "1",
		want: "fake kill c1: container does not exist", wantNotFound: true,
	}, {
		name: "crun missing state file",
		op:   func(r *Runtime) error { _, err := r.State(ctx, "c1"); return err },
		log:  "{\"msg\":\"error opening file `/run/fake/c1/status`: No such file or directory\",\"level\":\"error\",\"time\":\"2026-01-02T03:04:05.000000Z\"}\n",
		rc:   "1",
		want: "fake state c1: error opening file `/run/fake/c1/status`: No such file or directory", wantNotFound: true,
	}, {
		name: "crun missing state directory",
		op:   func(r *Runtime) error { return r.Delete(ctx, "c1", false) },
		log:  `{"msg":"cannot open directory '/run/fake/c1': No such file or directory","level":"error","time":"x"}` + "\n",
		rc:   "1",
		want: "fake delete c1: cannot open directory '/run/fake/c1': No such file or directory", wantNotFound: true,
	}, {
		name: "another container's file",
		op:   func(r *Runtime) error { return r.Start(ctx, "c1") },
		log:  "{\"msg\":\"error opening file `/run/fake/c10/status`: No such file or directory\",\"level\":\"error\"}\n",
		rc:   "1",
		want: "fake start c1: error opening file `/run/fake/c10/status`: No such file or directory",
	}, {
		name: "not running is not missing",
		op:   func(r *Runtime) error { return r.Kill(ctx, "c1", syscall.SIGTERM, false) },
		log:  `{"level":"error","msg":"container not running","time":"x"}` + "\n",
		rc:   "1",
		want: "fake kill c1: container not running",
	}, {
		name: "last error wins over warnings, runc prefix dropped",
		op:   func(r *Runtime) error { return r.Create(ctx, "c1", "/b", CreateOpts{}) },
		log: `{"level":"warning","msg":"early warning"}` + "\n" +
			`{"level":"error","msg":"an earlier error"}` + "\n" +
			`{"level":"error","msg":"runc create failed: unable to start container process: exec: \"/x\": stat /x: no such file or directory"}` + "\n" +
			`{"level":"warning","msg":"late warning"}` + "\n",
		stderr: "runc create failed: unable to start container process\n", rc: "1",
		want: `fake create c1: unable to start container process: exec: "/x": stat /x: no such file or directory`,
	}, {
		name: "crun hybrid cgroups",
		op:   func(r *Runtime) error { return r.Create(ctx, "probe-1", "/b", CreateOpts{}) },
		log:  `{"msg":"cgroups in hybrid mode not supported, drop all controllers from cgroupv2","level":"error","time":"2026-01-02T03:04:05.000000Z"}` + "\n",
		rc:   "1",
		want: "fake create probe-1: cgroups in hybrid mode not supported, drop all controllers from cgroupv2",
	}, {
		name:   "create never reports not found",
		op:     func(r *Runtime) error { return r.Create(ctx, "c1", "/b", CreateOpts{}) },
		stderr: "container does not exist\n", rc: "1",
		want: "fake create c1: container does not exist",
	}, {
		name:   "stderr only, before the log is open",
		op:     func(r *Runtime) error { return r.Create(ctx, "c1", "/nope", CreateOpts{}) },
		stderr: "some noise\nchdir `/nope` failed: No such file or directory\n", rc: "1",
		want: "fake create c1: chdir `/nope` failed: No such file or directory",
	}, {
		name: "warning only",
		op:   func(r *Runtime) error { return r.Start(ctx, "c1") },
		log:  `{"level":"warning","msg":"something odd"}` + "\n", rc: "1",
		want: "fake start c1: something odd",
	}, {
		name: "no message",
		op:   func(r *Runtime) error { return r.Delete(ctx, "c1", true) },
		rc:   "3",
		want: "fake delete c1: exit status 3",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t)
			f.set(t, "log.in", tt.log)
			f.set(t, "stderr.in", tt.stderr)
			f.set(t, "rc", tt.rc)
			err := tt.op(f.Runtime)
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %q\nwant %q", err, tt.want)
			}
			if got := errors.Is(err, ErrNotFound); got != tt.wantNotFound {
				t.Errorf("errors.Is(err, ErrNotFound) = %v", got)
			}
			var e *Error
			var exitErr *exec.ExitError
			if !errors.As(err, &e) || e.Runtime != "fake" || !errors.As(err, &exitErr) {
				t.Errorf("error %#v is not an *Error wrapping an *exec.ExitError", err)
			}
		})
	}
}

func TestMissingBinary(t *testing.T) {
	r := &Runtime{Name: "nope", Path: filepath.Join(t.TempDir(), "nope")}
	err := r.Start(context.Background(), "c1")
	if err == nil || !strings.HasPrefix(err.Error(), "nope start c1: ") || errors.Is(err, ErrNotFound) {
		t.Errorf("err %v", err)
	}
}

func TestContextDone(t *testing.T) {
	f := newFake(t)
	pidFile := filepath.Join(f.dir, "child.pid")
	// A grandchild in the runtime's process group holds its pipes too.
	f.set(t, "run.in", "sleep 30 & echo $! > "+pidFile+"; wait\n")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := f.Start(ctx, "c1")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want a deadline error", err)
	}
	if d := time.Since(start); d > waitDelay {
		t.Errorf("returned after %v", d)
	}
	if b, err := os.ReadFile(pidFile); err == nil {
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		waitGone(t, pid)
	}
}

func TestProbeSpec(t *testing.T) {
	s := probeSpec("pier-probe-runc-01234567", "busybox")
	if s.Linux.CgroupsPath != "/pier-probe-runc-01234567" {
		t.Errorf("cgroupsPath %q", s.Linux.CgroupsPath)
	}
	if !s.Root.Readonly || s.Root.Path != "rootfs" {
		t.Errorf("root %+v", s.Root)
	}
	if got := s.Process.Args; !slices.Equal(got, []string{"/busybox", "true"}) {
		t.Errorf("args %q", got)
	}
	var ns []specs.LinuxNamespaceType
	for _, n := range s.Linux.Namespaces {
		ns = append(ns, n.Type)
	}
	for _, want := range []specs.LinuxNamespaceType{specs.MountNamespace, specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.NetworkNamespace} {
		if !slices.Contains(ns, want) {
			t.Errorf("no %s namespace", want)
		}
	}
	if c := s.Process.Capabilities; c == nil || len(c.Bounding)+len(c.Effective)+len(c.Permitted) != 0 {
		t.Errorf("capabilities %+v", c)
	}

	id, err := probeID("my runtime/1")
	if err != nil || !strings.HasPrefix(id, "pier-probe-my_runtime_1-") || len(id) != len("pier-probe-my_runtime_1-")+8 {
		t.Errorf("probeID %q, %v", id, err)
	}

	dir := filepath.Join(t.TempDir(), "bundle")
	exe := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(exe, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := writeBundle(dir, probeSpec("x", "prog"), exe); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "rootfs", "prog")); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("rootfs/prog: %v %v", fi, err)
	}
	var back specs.Spec
	if b, err := os.ReadFile(filepath.Join(dir, "config.json")); err != nil || json.Unmarshal(b, &back) != nil || back.Linux.CgroupsPath != "/x" {
		t.Errorf("config.json: %v", err)
	}
}

func TestProbeFailure(t *testing.T) {
	f := newFake(t)
	f.set(t, "log.in", `{"msg":"cgroups in hybrid mode not supported, drop all controllers from cgroupv2","level":"error"}`+"\n")
	f.set(t, "rc", "1")
	workDir := t.TempDir()
	err := f.Probe(context.Background(), workDir)
	if err == nil || !strings.HasPrefix(err.Error(), "fake create pier-probe-fake-") ||
		!strings.HasSuffix(err.Error(), ": cgroups in hybrid mode not supported, drop all controllers from cgroupv2") {
		t.Errorf("err %v", err)
	}
	// The failed create is followed by a delete --force, just in case.
	if got := f.args(t); !slices.Contains(got, "--force") {
		t.Errorf("last call %q", got)
	}
	if entries, _ := os.ReadDir(workDir); len(entries) > 0 {
		t.Errorf("workDir holds %v", entries)
	}
}

// Tests below run the real runtimes.

const testPrefix = "unit-"

func needRuntime(t *testing.T, name string) *Runtime {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	path, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("no %s: %v", name, err)
	}
	if _, err := os.Stat(ProbeBinary); err != nil {
		t.Skip(err)
	}
	// The name keeps the probes of pierds that other packages' tests start
	// apart from this package's, for checkClean.
	return &Runtime{Name: testPrefix + name, Path: path, Root: filepath.Join(t.TempDir(), "state")}
}

// checkClean fails the test if the runtime kept state, workDir is not
// empty, or a pier-probe cgroup or cgroup name is left in any hierarchy.
func checkClean(t *testing.T, r *Runtime, workDir, cgroup string) {
	t.Helper()
	for _, dir := range []string{r.Root, workDir} {
		if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
			t.Errorf("%s not empty: %v", dir, entries)
		}
	}
	patterns := []string{"pier-probe-" + testPrefix + "*", "*/pier-probe-" + testPrefix + "*"}
	if cgroup != "" {
		patterns = append(patterns, cgroup, "*/"+cgroup)
	}
	var left []string
	for _, pattern := range patterns {
		m, _ := filepath.Glob(filepath.Join(cgroupRoot, pattern))
		left = append(left, m...)
	}
	if len(left) > 0 {
		t.Errorf("cgroups left: %q", left)
	}
}

func TestProbeRunc(t *testing.T) {
	r := needRuntime(t, "runc")
	workDir := t.TempDir()
	ctx := context.Background()
	var times []time.Duration
	for range 5 {
		start := time.Now()
		if err := r.Probe(ctx, workDir); err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(start))
	}
	t.Logf("runc probe: %v", times)
	// Without busybox, the probe holds the running program.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.probe(ctx, workDir, self); err != nil {
		t.Errorf("probe holding %s: %v", self, err)
	}
	checkClean(t, r, workDir, "")
	if v, err := r.Version(ctx); err != nil || v == "" {
		t.Errorf("version %q, %v", v, err)
	} else {
		t.Logf("runc version %s", v)
	}
}

func TestProbeCrun(t *testing.T) {
	r := needRuntime(t, "crun")
	workDir := t.TempDir()
	start := time.Now()
	err := r.Probe(context.Background(), workDir)
	t.Logf("crun probe: %v, %v", time.Since(start), err)
	// Debian's crun 1.8 refuses a hybrid cgroup layout; elsewhere it works.
	if err != nil && !strings.Contains(err.Error(), "hybrid") {
		t.Errorf("crun probe failed for another reason: %v", err)
	}
	if err != nil && !strings.HasPrefix(err.Error(), r.Name+" create pier-probe-"+r.Name+"-") {
		t.Errorf("error %q lacks the runtime, operation and id", err)
	}
	checkClean(t, r, workDir, "")
	if v, err := r.Version(context.Background()); err != nil || v == "" {
		t.Errorf("version %q, %v", v, err)
	} else {
		t.Logf("crun version %s", v)
	}
}

func TestNotFoundReal(t *testing.T) {
	for _, name := range []string{"runc", "crun"} {
		t.Run(name, func(t *testing.T) {
			r := needRuntime(t, name)
			ctx := context.Background()
			_, err := r.State(ctx, "nope")
			errs := []error{
				err,
				r.Start(ctx, "nope"),
				r.Kill(ctx, "nope", syscall.SIGKILL, false),
				r.Delete(ctx, "nope", false),
			}
			for _, err := range errs {
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("err %v, want ErrNotFound", err)
				}
			}
			if err := r.Delete(ctx, "nope", true); err != nil && !errors.Is(err, ErrNotFound) {
				t.Errorf("delete --force: %v", err)
			}
		})
	}
}

func TestLifecycleRunc(t *testing.T) {
	r := needRuntime(t, "runc")
	ctx := context.Background()
	id, err := probeID("lifecycle")
	if err != nil {
		t.Fatal(err)
	}
	id = strings.Replace(id, "pier-probe", "pier-oci-test", 1)
	bundle := filepath.Join(t.TempDir(), id)
	spec := probeSpec(id, "busybox")
	spec.Process.Args = []string{"/busybox", "sleep", "10"}
	if err := writeBundle(bundle, spec, ProbeBinary); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Delete(context.Background(), id, true)
		removeCgroup(id)
		checkClean(t, r, "", id)
	})
	// Be the subreaper, as the shim is: the container's processes become
	// this process's children once runc exits, and it reaps them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)

	pidFile := filepath.Join(bundle, "pid")
	if err := r.Create(ctx, id, bundle, CreateOpts{PidFile: pidFile}); err != nil {
		t.Fatal(err)
	}
	s, err := r.State(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != id || s.Status != "created" || s.Pid <= 0 || s.Bundle != bundle {
		t.Errorf("state after create %+v", s)
	}
	if b, err := os.ReadFile(pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(s.Pid) {
		t.Errorf("pid file %q, %v; state pid %d", b, err, s.Pid)
	}
	if err := r.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if s, err = r.State(ctx, id); err != nil {
		t.Fatal(err)
	}
	if s.Status != "running" || s.Pid <= 0 {
		t.Errorf("state after start %+v", s)
	}
	if err := unix.Kill(s.Pid, 0); err != nil {
		t.Errorf("pid %d: %v", s.Pid, err)
	}

	// Exec a process whose output goes to a file.
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	execPidFile := filepath.Join(bundle, "exec.pid")
	p := &specs.Process{Args: []string{"/busybox", "echo", "hello"}, Cwd: "/", Env: []string{"PATH=/"}, Capabilities: &specs.LinuxCapabilities{}}
	if err := r.Exec(ctx, id, p, ExecOpts{PidFile: execPidFile, IO: IO{Stdout: out}}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(execPidFile); err != nil {
		t.Error(err)
	} else if ws := reap(t, string(b)); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("exec'd process: wait status %#x", ws)
	}
	if b, _ := os.ReadFile(out.Name()); string(b) != "hello\n" {
		t.Errorf("exec output %q", b)
	}

	if err := r.Kill(ctx, id, syscall.SIGKILL, false); err != nil {
		t.Fatal(err)
	}
	if ws := reap(t, strconv.Itoa(s.Pid)); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("init: wait status %#x", ws)
	}
	if s, err = r.State(ctx, id); err != nil || s.Status != "stopped" {
		t.Errorf("state after kill %+v, %v", s, err)
	}
	if err := r.Delete(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.State(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("state after delete: %v", err)
	}
	if err := r.Delete(ctx, id, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

// reap waits for child pid (a decimal string) to exit and returns its status.
func reap(t *testing.T, pid string) unix.WaitStatus {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimSpace(pid))
	if err != nil {
		t.Fatal(err)
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(n, &ws, 0, nil)
		if err == nil {
			return ws
		}
		if !errors.Is(err, unix.EINTR) {
			t.Fatalf("wait4 %d: %v", n, err)
		}
	}
}

// waitGone waits until process pid has exited.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return
		}
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
			// A zombie has exited; its parent reaps it.
			if _, rest, ok := strings.Cut(string(b), ") "); ok && strings.HasPrefix(rest, "Z") {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("process %d still there", pid)
}

// TestProbeOnNodev probes where systemd puts pier's state: on a file
// system mounted nodev, as /run is. The probe's /dev must still work.
func TestProbeOnNodev(t *testing.T) {
	r := needRuntime(t, "runc")
	workDir := t.TempDir()
	if err := unix.Mount("tmpfs", workDir, "tmpfs", unix.MS_NODEV|unix.MS_NOSUID, "mode=0700"); err != nil {
		t.Skipf("mount a nodev tmpfs: %v", err)
	}
	defer unix.Unmount(workDir, unix.MNT_DETACH)
	if err := r.Probe(context.Background(), workDir); err != nil {
		t.Fatalf("probe on a nodev file system: %v", err)
	}
	checkClean(t, r, workDir, "")
}

func TestRuntimeEnvDropsSystemdVariables(t *testing.T) {
	got := runtimeEnv([]string{"PATH=/bin", "NOTIFY_SOCKET=/run/systemd/notify", "WATCHDOG_USEC=1", "WATCHDOG_PID=2", "LISTEN_FDS=1", "TMPDIR=/tmp"})
	if want := []string{"PATH=/bin", "TMPDIR=/tmp"}; !slices.Equal(got, want) {
		t.Errorf("runtime environment %q, want %q", got, want)
	}
}
