// Tests of pier-shim-monitor, driven without the Go shim: a shell starts the
// container's "init" in the background and execs the monitor in its place,
// so that the init is the monitor's child, as after pier-shim's exec. The
// test hands it a listening socket, output pipes (or a pty) and a helper
// script standing in for "pier-shim exec".
//
// The binaries are the Makefile's (make -C ../.. bin/...): the monitor, and
// the same with AddressSanitizer and UBSan, which every scenario runs too
// (a sanitizer report fails the test), the fault injection build, the C
// unit tests and, where clang is installed, the fuzz targets.
// PIER_MONITOR_TEST_BIN (and PIER_MONITOR_TEST_FAULT_BIN) run the scenarios with
// another build instead, e.g. an older monitor.
package monitor_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const root = "../.."

var bins struct {
	plain, asan, fault, unit string
}

func TestMain(m *testing.M) {
	targets := []string{"bin/pier-shim-monitor", "bin/pier-shim-monitor-asan", "bin/pier-shim-monitor-fault", "bin/pier-shim-monitor-unit"}
	if out, err := exec.Command("make", append([]string{"-s", "-C", root}, targets...)...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "make: %v\n%s", err, out)
		os.Exit(1)
	}
	abs := func(p string) string {
		a, err := filepath.Abs(filepath.Join(root, p))
		if err != nil {
			panic(err)
		}
		return a
	}
	bins.plain, bins.asan, bins.fault, bins.unit = abs(targets[0]), abs(targets[1]), abs(targets[2]), abs(targets[3])
	if b := os.Getenv("PIER_MONITOR_TEST_BIN"); b != "" {
		bins.plain, bins.asan = b, b
	}
	if b := os.Getenv("PIER_MONITOR_TEST_FAULT_BIN"); b != "" {
		bins.fault = b
	}
	code := m.Run()
	// Nothing of the tests may outlive them.
	if left := leftovers(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "processes left behind:\n%s\n", strings.Join(left, "\n"))
		code = 1
	}
	os.Exit(code)
}

// leftovers lists the processes running a monitor binary of the tests, or
// in one of their directories.
func leftovers() []string {
	var left []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		s := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		if strings.Contains(s, "pier-mon-test-") || strings.Contains(s, bins.plain+" ") || strings.Contains(s, bins.asan+" ") || strings.Contains(s, bins.fault+" ") {
			left = append(left, filepath.Base(filepath.Dir(d))+": "+s)
		}
	}
	return left
}

// variants runs f with the monitor and with its sanitizer build.
func variants(t *testing.T, f func(t *testing.T, bin string)) {
	for _, v := range []struct{ name, bin string }{{"plain", bins.plain}, {"asan", bins.asan}} {
		t.Run(v.name, func(t *testing.T) { f(t, v.bin) })
	}
}

// opts say how to start a monitor.
type opts struct {
	init      string // the init's shell command; default: sleep
	tty       bool   // the init's stdio is a pty
	stdin     bool   // the init's stdin is a pipe the monitor keeps (else /dev/null)
	stdinOnce bool
	oom       bool     // an OOM counter file, oom_kill 0
	env       []string // more environment (PIER_FAULT=...)
	marker    bool     // an inherited descriptor the monitor knows nothing of (fd 10)
	noHello   bool     // do not wait for the monitor's hello
}

// mon is a running monitor.
type mon struct {
	t       *testing.T
	bin     string
	dir     string // the shim's directory: exit.json, shim.log, the helper's records
	sock    string
	logPath string
	cmd     *exec.Cmd
	pid     int
	initPid int
	done    chan struct{}
	waitErr error
	sanDir  string
}

// The helper stands in for "pier-shim exec <dir> <status>": it records its
// arguments, its descriptors and the request (one line from fd 3), and
// answers.
const helperScript = `#!/bin/sh
d="$2"
echo "$@" > "$d/helper.args"
ls -l /proc/self/fd > "$d/helper.fds" 2>&1
head -n 1 <&3 > "$d/helper.req"
printf '{"v":1,"exec":{"exitCode":7}}\n' >&3
`

// The shell that makes the init the monitor's child: "$1" is the init's
// command, the rest the monitor's command line. The init waits until its
// parent is the monitor (named pier-shim): an init that ended before would
// be the shell's to reap.
const starter = `init="$1"; shift
(
	exec 3>&- 4>&- 5>&- 9>&-
	read -r _ _ _ ppid _ < /proc/self/stat
	until [ "$(cat /proc/$ppid/comm || echo gone)" = pier-shim ]; do
		[ -e /proc/$ppid ] || exit 1
		sleep 0.005
	done
	eval "$init"
) <&8 >&6 2>&7 6>&- 7>&- 8>&- &
pid=$!
exec 6>&- 7>&- 8>&-
exec "$@" pid=$pid
`

var createdArg, createdAt = "1700000000.000000005", "2023-11-14T22:13:20.000000005Z"

func start(t *testing.T, bin string, o opts) *mon {
	t.Helper()
	dir, err := os.MkdirTemp("", "pier-mon-test-")
	if err != nil {
		t.Fatal(err)
	}
	m := &mon{t: t, bin: bin, dir: dir, sock: filepath.Join(dir, "s"), done: make(chan struct{}), sanDir: filepath.Join(dir, "san")}
	t.Cleanup(m.cleanup)
	for _, d := range []string{"logs", "san"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	m.logPath = filepath.Join(dir, "logs", "ctr.log")
	helper := filepath.Join(dir, "helper.sh")
	if err := os.WriteFile(helper, []byte(helperScript), 0o755); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: m.sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false) // the monitor's from now on
	lf, err := ln.File()
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	// fd 3 listener, 4 stdout r (or the pty master), 5 stderr r, 6 stdout w,
	// 7 stderr w, 8 the init's stdin, 9 the monitor's stdin, 10 the marker.
	files := []*os.File{lf, null, null, null, null, null, null, null}
	args := []string{bin, "monitor", "id=ctr", "dir=" + dir, "socket=" + m.sock,
		"log=" + m.logPath, "log-dir=" + filepath.Join(dir, "logs"), "log-name=ctr.log",
		"helper=" + helper, "created=" + createdArg, "listen-fd=3",
		// What older pier-shims pass, ignored.
		"runtime-name=runc", "runtime=/bin/false", "runtime-root=/nonexistent", "runtime-systemd-cgroup=0"}
	if o.tty {
		master, slave := openPty(t)
		files[1], files[3], files[4], files[5] = master, slave, slave, slave
		args = append(args, "tty=1", "pty-fd=4")
		if o.stdin {
			args = append(args, "pty-stdin=1")
		}
	} else {
		var p [4]*os.File
		for i := 0; i < 4; i += 2 {
			if p[i], p[i+1], err = os.Pipe(); err != nil {
				t.Fatal(err)
			}
		}
		files[1], files[2], files[3], files[4] = p[0], p[2], p[1], p[3]
		args = append(args, "stdout-fd=4", "stderr-fd=5")
		if o.stdin {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			files[5], files[6] = r, w
			args = append(args, "stdin-fd=9")
		}
	}
	if o.stdinOnce {
		args = append(args, "stdin-once=1")
	}
	if o.marker {
		f, err := os.Create(filepath.Join(dir, "marker"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if o.oom {
		oom := filepath.Join(dir, "memory.events")
		if err := os.WriteFile(oom, []byte("oom 0\noom_kill 0\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "oom="+oom, "oom-base=0")
	}
	init := o.init
	if init == "" {
		init = "exec sleep 1000"
	}
	shimLog, err := os.Create(filepath.Join(dir, "shim.log"))
	if err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command("/bin/sh", append([]string{"-c", starter, "sh", init}, args...)...)
	m.cmd.ExtraFiles = files
	m.cmd.Stderr = shimLog
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	m.cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"GATE=" + filepath.Join(dir, "go"),
		"ASAN_OPTIONS=log_path=" + m.sanDir + "/asan:abort_on_error=0:exitcode=66:detect_leaks=1",
		"UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=" + m.sanDir + "/ubsan",
	}, o.env...)
	err = m.cmd.Start()
	for _, f := range append(files, shimLog) {
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	m.pid = m.cmd.Process.Pid
	go func() {
		m.waitErr = m.cmd.Wait()
		close(m.done)
	}()
	if !o.noHello {
		if a := m.call(`{"v":1,"op":"hello"}`); a.Pid != m.pid || a.Error != "" {
			t.Fatalf("hello: %+v", a)
		}
		m.initPid = m.state().Pid
	}
	return m
}

// openPty opens a new pty: its master and its terminal.
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return master, slave
}

// cleanup kills what is left (the monitor's process group: it, the init,
// helpers), fails the test on a sanitizer report and removes the files.
func (m *mon) cleanup() {
	// The process group outlives a monitor that exited: its init and
	// helpers may be left.
	syscall.Kill(-m.pid, syscall.SIGKILL)
	<-m.done
	if m.initPid > 0 {
		syscall.Kill(m.initPid, syscall.SIGKILL) // the monitor died first: an orphan
	}
	m.checkSanitizers()
	if m.t.Failed() {
		b, _ := os.ReadFile(filepath.Join(m.dir, "shim.log"))
		m.t.Logf("shim.log:\n%s", b)
	}
	os.RemoveAll(m.dir)
}

var sanitizerReport = regexp.MustCompile(`(?m)(ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:|SUMMARY: \w+Sanitizer)`)

func (m *mon) checkSanitizers() {
	reports, _ := filepath.Glob(filepath.Join(m.sanDir, "*"))
	for _, r := range reports {
		b, _ := os.ReadFile(r)
		m.t.Errorf("sanitizer report %s:\n%s", filepath.Base(r), b)
	}
	if b, _ := os.ReadFile(filepath.Join(m.dir, "shim.log")); sanitizerReport.Match(b) {
		m.t.Errorf("sanitizer report in shim.log:\n%s", b)
	}
}

// waitExit waits for the monitor to end and returns its exit status.
func (m *mon) waitExit(d time.Duration) int {
	m.t.Helper()
	select {
	case <-m.done:
	case <-time.After(d):
		m.t.Fatalf("the monitor has not exited after %v", d)
	}
	var ee *exec.ExitError
	if errors.As(m.waitErr, &ee) {
		return ee.ExitCode()
	}
	if m.waitErr != nil {
		m.t.Fatal(m.waitErr)
	}
	return 0
}

func (m *mon) alive() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

func (m *mon) shimLog() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "shim.log"))
	return string(b)
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

type exitT struct {
	Code       int    `json:"code"`
	Signal     int    `json:"signal"`
	OOMKilled  bool   `json:"oomKilled"`
	FinishedAt string `json:"finishedAt"`
}

type stateT struct {
	Status    string `json:"status"`
	Pid       int    `json:"pid"`
	ShimPid   int    `json:"shimPid"`
	CreatedAt string `json:"createdAt"`
	StartedAt string `json:"startedAt"`
	Exit      *exitT `json:"exit"`
}

type answer struct {
	V     int      `json:"v"`
	Error string   `json:"error"`
	Code  string   `json:"code"`
	Pid   int      `json:"pid"`
	State *stateT  `json:"state"`
	Exit  *exitT   `json:"exit"`
	Fds   []string `json:"fds"`
	Exec  *struct {
		ExitCode int `json:"exitCode"`
	} `json:"exec"`

	raw   string
	files []*os.File
	conn  *net.UnixConn
}

func (m *mon) dial() *net.UnixConn {
	m.t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: m.sock, Net: "unix"})
	if err != nil {
		m.t.Fatal(err)
	}
	return c
}

// read reads one answer line from c (and the descriptors with it).
func read(t *testing.T, c *net.UnixConn, d time.Duration) (*answer, error) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	var line []byte
	var files []*os.File
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*8))
	for !bytes.Contains(line, []byte("\n")) {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, msg := range msgs {
				fds, _ := unix.ParseUnixRights(&msg)
				for _, fd := range fds {
					files = append(files, os.NewFile(uintptr(fd), "passed"))
				}
			}
		}
		if n > 0 {
			line = append(line, buf[:n]...)
		}
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("after %q: %w", line, err)
		}
	}
	a := &answer{raw: string(line), files: files, conn: c}
	if err := json.Unmarshal(line, a); err != nil {
		return nil, fmt.Errorf("answer %q: %w", line, err)
	}
	return a, nil
}

// call sends one request and returns its answer.
func (m *mon) call(req string) *answer {
	m.t.Helper()
	c := m.dial()
	defer c.Close()
	if _, err := c.Write([]byte(req + "\n")); err != nil {
		m.t.Fatalf("%.100s: %v", req, err)
	}
	a, err := read(m.t, c, 10*time.Second)
	if err != nil {
		m.t.Fatalf("%.100s: %v", req, err)
	}
	if a.V != 1 {
		m.t.Fatalf("%.100s: answer of version %d: %s", req, a.V, a.raw)
	}
	return a
}

// open sends one request and returns its answer with the connection open.
func (m *mon) open(req string) *answer {
	m.t.Helper()
	c := m.dial()
	if _, err := c.Write([]byte(req + "\n")); err != nil {
		m.t.Fatal(err)
	}
	a, err := read(m.t, c, 10*time.Second)
	if err != nil {
		m.t.Fatalf("%.100s: %v", req, err)
	}
	return a
}

func (m *mon) state() *stateT {
	m.t.Helper()
	a := m.call(`{"v":1,"op":"state"}`)
	if a.State == nil {
		m.t.Fatalf("state: %s", a.raw)
	}
	return a.State
}

func (m *mon) ok(req string) {
	m.t.Helper()
	if a := m.call(req); a.Error != "" || a.raw != `{"v":1}`+"\n" {
		m.t.Fatalf("%.100s: %s", req, a.raw)
	}
}

// readExit reads exit.json: its exact text and its content.
func (m *mon) readExit() (string, *exitT) {
	m.t.Helper()
	b, err := os.ReadFile(filepath.Join(m.dir, "exit.json"))
	if err != nil {
		m.t.Fatal(err)
	}
	var e struct {
		V int `json:"v"`
		exitT
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.V != 1 {
		m.t.Fatalf("exit.json %q: %v", b, err)
	}
	return string(b), &e.exitT
}

func (m *mon) gate() string { return filepath.Join(m.dir, "go") }

// initGated is an init that runs before, waits for the gate file, then runs
// after.
func initGated(before, after string) string {
	return before + `; while [ ! -e "$GATE" ]; do sleep 0.01; done; ` + after
}

func (m *mon) openGate() {
	if err := os.WriteFile(m.gate(), nil, 0o600); err != nil {
		m.t.Fatal(err)
	}
}

var rfc3339Nano = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$`)

// ---- the scenarios ----

// TestVersion: --version prints the Makefile's VERSION (bin/version).
func TestVersion(t *testing.T) {
	out, err := exec.Command(bins.plain, "--version").Output()
	if err != nil || !regexp.MustCompile(`^pier-shim-monitor \S+\n$`).Match(out) {
		t.Fatalf("--version: %q %v", out, err)
	}
	if os.Getenv("PIER_MONITOR_TEST_BIN") == "" {
		want, err := os.ReadFile(filepath.Join(root, "bin/version"))
		if err != nil || string(out) != "pier-shim-monitor "+string(want) {
			t.Fatalf("--version: %q, want the version %q (%v)", out, want, err)
		}
	}
}

func TestHelloState(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{})
		st := m.state()
		if st.Status != "created" || st.Pid != m.initPid || st.Pid <= 0 || st.ShimPid != m.pid || st.CreatedAt != createdAt || st.StartedAt != "" || st.Exit != nil {
			t.Fatalf("state %+v", st)
		}
		// The init is the monitor's child.
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", st.Pid))
		if err != nil || !regexp.MustCompile(`\) \S `+strconv.Itoa(m.pid)+` `).Match(b) {
			t.Fatalf("init's stat %q: %v", b, err)
		}
		if !strings.Contains(m.call(`{"v":1,"op":"hello"}`).raw, `{"v":1,"pid":`+strconv.Itoa(m.pid)+`}`) {
			t.Fatal("hello")
		}
	})
}

func TestStarted(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{init: initGated("true", "exit 3")})
		before := time.Now()
		m.ok(`{"v":1,"op":"started"}`)
		st := m.state()
		started, err := time.Parse(time.RFC3339Nano, st.StartedAt)
		if st.Status != "running" || err != nil || started.Before(before.Add(-time.Second)) || started.After(time.Now()) {
			t.Fatalf("state after started: %+v (%v)", st, err)
		}
		// Again: startedAt stays.
		m.ok(`{"v":1,"op":"started"}`)
		if st2 := m.state(); st2.StartedAt != st.StartedAt || st2.Status != "running" {
			t.Fatalf("state after started twice: %+v", st2)
		}
		m.openGate()
		if a := m.call(`{"v":1,"op":"wait"}`); a.Exit == nil || a.Exit.Code != 3 {
			t.Fatalf("wait: %s", a.raw)
		}
		// Started after the exit: ok, still exited.
		m.ok(`{"v":1,"op":"started"}`)
		if st3 := m.state(); st3.Status != "exited" || st3.StartedAt != st.StartedAt || st3.Exit == nil || st3.Exit.Code != 3 {
			t.Fatalf("state after the exit: %+v", st3)
		}
	})
}

// A container whose init has exited before pierd's "started": it did
// start; the status stays exited.
func TestStartedAfterExit(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{init: "exit 0"})
		if a := m.call(`{"v":1,"op":"wait"}`); a.Exit == nil || a.Exit.Code != 0 {
			t.Fatalf("wait: %s", a.raw)
		}
		if st := m.state(); st.StartedAt != "" || st.Status != "exited" {
			t.Fatalf("state: %+v", st)
		}
		m.ok(`{"v":1,"op":"started"}`)
		if st := m.state(); st.StartedAt == "" || st.Status != "exited" {
			t.Fatalf("state after started: %+v", st)
		}
	})
}

func TestWaitAndExitFile(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{init: initGated("true", "exit 42")})
		// Two waits, held until the exit.
		w1, w2 := m.dial(), m.dial()
		defer w1.Close()
		defer w2.Close()
		for _, w := range []*net.UnixConn{w1, w2} {
			if _, err := w.Write([]byte(`{"v":1,"op":"wait"}` + "\n")); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := read(t, w1, 200*time.Millisecond); err == nil {
			t.Fatal("wait answered while the init runs")
		}
		if _, err := os.Stat(filepath.Join(m.dir, "exit.json")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("exit.json before the exit: %v", err)
		}
		m.openGate()
		a, err := read(t, w2, 5*time.Second)
		if err != nil || a.Exit == nil || a.Exit.Code != 42 || a.Exit.Signal != 0 || a.Exit.OOMKilled || !rfc3339Nano.MatchString(a.Exit.FinishedAt) {
			t.Fatalf("wait: %+v %v", a, err)
		}
		text, e := m.readExit()
		if want := `{"v":1,"code":42,"finishedAt":"` + a.Exit.FinishedAt + `"}` + "\n"; text != want {
			t.Fatalf("exit.json %q, want %q", text, want)
		}
		if *e != *a.Exit {
			t.Fatalf("exit.json %+v, wait %+v", e, a.Exit)
		}
		if _, err := os.Stat(filepath.Join(m.dir, ".exit.json.tmp")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the temporary file is left: %v", err)
		}
		// A wait after the exit: answered at once.
		if a := m.call(`{"v":1,"op":"wait"}`); a.Exit == nil || *a.Exit != *e {
			t.Fatalf("wait after the exit: %s", a.raw)
		}
		st := m.state()
		if st.Status != "exited" || st.Exit == nil || *st.Exit != *e {
			t.Fatalf("state %+v", st)
		}
	})
}

// logEntries reads the CRI log: "<stream> <tag> <content>" per entry.
func logEntries(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.SplitAfter(string(b), "\n") {
		if l == "" {
			continue
		}
		f := strings.SplitN(strings.TrimSuffix(l, "\n"), " ", 4)
		if len(f) != 4 || !rfc3339Nano.MatchString(f[0]) || !strings.HasSuffix(l, "\n") {
			t.Fatalf("log line %q", l)
		}
		c := f[3]
		if len(c) > 40 {
			c = fmt.Sprintf("%d*%c", len(c), c[0])
		}
		out = append(out, f[1]+" "+f[2]+" "+c)
	}
	return out
}

func TestLogAndReopen(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		init := initGated(`echo one; echo two >&2; printf '%20000s\n' x | tr ' ' y`, `echo three; printf tail`)
		m := start(t, bin, opts{init: init})
		waitFor(t, "the first lines", func() bool {
			b, _ := os.ReadFile(m.logPath)
			return bytes.Count(b, []byte("\n")) >= 4
		})
		// Rotated: the monitor writes to the new file after reopen-log.
		if err := os.Rename(m.logPath, m.logPath+".1"); err != nil {
			t.Fatal(err)
		}
		m.ok(`{"v":1,"op":"reopen-log"}`)
		m.openGate()
		m.call(`{"v":1,"op":"wait"}`)
		got := strings.Join(logEntries(t, m.logPath+".1"), "|")
		for _, want := range []string{"stdout F one", "stderr F two", "stdout P 16384*y", "stdout F 3616*y"} {
			if !strings.Contains(got, want) {
				t.Errorf("old log %q lacks %q", got, want)
			}
		}
		if got := strings.Join(logEntries(t, m.logPath), "|"); got != "stdout F three|stdout P tail" {
			t.Errorf("new log %q", got)
		}
		// A symbolic link in the log's place is refused; the log in use stays.
		os.Remove(m.logPath)
		if err := os.Symlink(filepath.Join(m.dir, "elsewhere"), m.logPath); err != nil {
			t.Fatal(err)
		}
		if a := m.call(`{"v":1,"op":"reopen-log"}`); !strings.Contains(a.Error, "symbolic link") {
			t.Errorf("reopen-log onto a symbolic link: %s", a.raw)
		}
		if _, err := os.Lstat(filepath.Join(m.dir, "elsewhere")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the link was followed: %v", err)
		}
	})
}

func TestAttach(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{init: "exec cat", stdin: true, stdinOnce: true})
		// The attach object is parsed as JSON: a nested object first.
		a := m.open(`{"v":1,"op":"attach","attach":{"x":{},"stdin":true,"stdout":true,"stderr":true}}`)
		defer a.conn.Close()
		if strings.Join(a.Fds, ",") != "stdin,stdout,stderr" || len(a.files) != 3 {
			t.Fatalf("attach: %s, %d files", a.raw, len(a.files))
		}
		stdin, stdout := a.files[0], a.files[1]
		defer func() {
			for _, f := range a.files {
				f.Close()
			}
		}()
		// A second attachment, output only, sees the same output.
		b := m.open(`{"v":1,"op":"attach","attach":{"stdout":true}}`)
		defer b.conn.Close()
		if strings.Join(b.Fds, ",") != "stdout" || len(b.files) != 1 {
			t.Fatalf("attach: %s", b.raw)
		}
		defer b.files[0].Close()
		if _, err := stdin.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		for _, r := range []*os.File{stdout, b.files[0]} {
			line, err := bufio.NewReader(r).ReadString('\n')
			if err != nil || line != "ping\n" {
				t.Fatalf("attached output %q: %v", line, err)
			}
		}
		// stdinOnce: the end of the attachment with stdin closes the
		// container's stdin; cat ends.
		stdin.Close()
		a.conn.Close()
		w := m.call(`{"v":1,"op":"wait"}`)
		if w.Exit == nil || w.Exit.Code != 0 {
			t.Fatalf("wait: %s", w.raw)
		}
		// The other attachment's output ends with the container's.
		b.files[0].SetReadDeadline(time.Now().Add(5 * time.Second))
		if rest, err := bufio.NewReader(b.files[0]).ReadString('\n'); rest != "" || err == nil {
			t.Fatalf("after the exit: %q %v", rest, err)
		}
		if got := strings.Join(logEntries(t, m.logPath), "|"); got != "stdout F ping" {
			t.Fatalf("log %q", got)
		}
		// An exited container: not_running.
		if x := m.call(`{"v":1,"op":"attach","attach":{"stdout":true}}`); x.Code != "not_running" || x.Error != "pier-shim: the container has exited: container is not running" {
			t.Fatalf("attach after the exit: %s", x.raw)
		}
	})
}

func TestAttachTTY(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{init: "exec cat", tty: true, stdin: true, stdinOnce: true})
		a := m.open(`{"v":1,"op":"attach","attach":{"stdin":true,"stdout":true,"stderr":true}}`)
		defer a.conn.Close()
		defer func() {
			for _, f := range a.files {
				f.Close()
			}
		}()
		if strings.Join(a.Fds, ",") != "pty,stdin,stdout" || len(a.files) != 3 {
			t.Fatalf("attach: %s", a.raw)
		}
		if _, err := a.files[1].Write([]byte("hi\n")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the echo and cat's output", func() bool {
			b, _ := os.ReadFile(m.logPath)
			return bytes.Count(b, []byte("\n")) >= 2
		})
		// The end of the attachment types ^D: cat ends.
		a.conn.Close()
		if w := m.call(`{"v":1,"op":"wait"}`); w.Exit == nil || w.Exit.Code != 0 {
			t.Fatalf("wait: %s", w.raw)
		}
		// The terminal's \r\n is no part of an entry.
		if got := strings.Join(logEntries(t, m.logPath), "|"); got != "stdout F hi|stdout F hi" {
			t.Fatalf("log %q", got)
		}
	})
}

// readHelperFile waits for the helper to have written name.
func (m *mon) helperFile(name string) string {
	m.t.Helper()
	var b []byte
	waitFor(m.t, name, func() bool {
		var err error
		b, err = os.ReadFile(filepath.Join(m.dir, name))
		return err == nil && len(b) > 0
	})
	return string(b)
}

// checkHelperFds fails when a program the helper runs (ls) inherits a
// descriptor besides its stdio and the connection (3).
func (m *mon) checkHelperFds() {
	m.t.Helper()
	for _, l := range strings.Split(m.helperFile("helper.fds"), "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[len(f)-2] != "->" {
			continue
		}
		// ls's: its stdio, the connection, its own /proc/self/fd
		fd, target := f[len(f)-3], f[len(f)-1]
		if fd != "0" && fd != "1" && fd != "2" && fd != "3" && !regexp.MustCompile(`^/proc/\d+/fd$`).MatchString(target) {
			m.t.Errorf("the helper got descriptor %s -> %s", fd, target)
		}
	}
}

func TestExecDelegated(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{marker: true})
		m.ok(`{"v":1,"op":"started"}`)
		req := `{"v":1,"op":"exec","exec":{"args":["sh","-c","echo hi"],"uid":0,"gid":0}}`
		a := m.call(req)
		if a.Exec == nil || a.Exec.ExitCode != 7 {
			t.Fatalf("exec: %s", a.raw)
		}
		if got := m.helperFile("helper.req"); got != req+"\n" {
			t.Fatalf("the helper got %q", got)
		}
		if got := m.helperFile("helper.args"); got != "exec "+m.dir+" running\n" {
			t.Fatalf("helper args %q", got)
		}
		m.checkHelperFds()
	})
}

// An exec request over 64 KiB reaches the helper whole.
func TestExecOver64KiB(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{})
		req := `{"v":1,"op":"exec","exec":{"args":["env"],"env":["BIG=` + strings.Repeat("b", 70000) + `"],"uid":0,"gid":0}}`
		a := m.call(req)
		if a.Exec == nil || a.Exec.ExitCode != 7 {
			t.Fatalf("exec: %s", a.raw)
		}
		if got := m.helperFile("helper.req"); got != req+"\n" {
			t.Fatalf("the helper got %d bytes, want %d", len(got), len(req)+1)
		}
		if got := m.helperFile("helper.args"); got != "exec "+m.dir+" created\n" {
			t.Fatalf("helper args %q", got)
		}
		// So does one with more values than the monitor's parser keeps.
		os.Remove(filepath.Join(m.dir, "helper.req"))
		req = `{"v":1,"op":"exec-stream","exec":{"args":["` + strings.Repeat(`a","`, 5000) + `"],"uid":0,"gid":0}}`
		m.call(req)
		if got := m.helperFile("helper.req"); got != req+"\n" {
			t.Fatalf("the helper got %d bytes, want %d", len(got), len(req)+1)
		}
	})
}

func TestBadRequests(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{})
		for _, c := range []struct {
			req, answer string // a regexp of the answer
		}{
			{`garbage`, `^\{"v":1,"error":"pier-shim: bad request: malformed JSON"\}$`},
			{`[1]`, `^\{"v":1,"error":"pier-shim: bad request: not a JSON object"\}$`},
			{`{"v":1}`, `^\{"v":1,"error":"pier-shim: unknown operation \\"\\""\}$`},
			{`{"v":2,"op":"hello"}`, `^\{"v":1,"error":"pier-shim: protocol version 2 not supported, this shim speaks version 1","code":"version"\}$`},
			{`{"op":"hello"}`, `"code":"version"`},
			{`{"v":1.5,"op":"hello"}`, `^\{"v":1,"error":"pier-shim: bad request: \\"v\\" is not an integer"\}$`},
			// what an older pierd, still running after an upgrade, asks
			{`{"v":1,"op":"start"}`, `^\{"v":1,"error":"pier-shim: unknown operation \\"start\\": pierd runs the runtime's start itself .*restart pierd after upgrading pier"\}$`},
			{`{"v":1,"op":"kill","signal":9,"all":true}`, `^\{"v":1,"error":"pier-shim: unknown operation \\"kill\\": pierd runs the runtime's kill itself .*restart pierd after upgrading pier"\}$`},
			{`{"v":1,"op":"hello","op":"delete"}`, `bad request: \\"op\\" given twice`},
			// keys of nested objects are not the request's
			{`{"v":1,"x":{"op":"delete"},"op":"hello"}`, `^\{"v":1,"pid":\d+\}$`},
			{`{"v":1,"op":"hel\u006co"}`, `^\{"v":1,"pid":\d+\}$`},
			{`{"v":1,"op":"hello","x":"\ud800"}`, `^\{"v":1,"pid":\d+\}$`},
			{`{"v":1,"op":"\ud800"}`, `bad request: \\"op\\" is not a valid string`},
			{`{"v":1,"op":"hello",}`, `bad request: malformed JSON`},
			// longer than the first peek, but no more than REQ_MAX
			{`{"v":1,"op":"hello","pad":"` + strings.Repeat("x", 60000) + `"}`, `^\{"v":1,"pid":\d+\}$`},
			// too large for the monitor to read itself
			{`{"v":1,"op":"state","pad":"` + strings.Repeat("x", 70000) + `"}`, `^\{"v":1,"error":"pier-shim: request too large \(state\): at most 65536 bytes, 128 values"\}$`},
			{`{"v":1,"op":"state","pad":[` + strings.Repeat("1,", 200) + `1]}`, `request too large \(state\)`},
		} {
			a := m.call(c.req)
			if !regexp.MustCompile(c.answer).MatchString(strings.TrimSuffix(a.raw, "\n")) {
				t.Errorf("%.80s: answer %s, want %s", c.req, a.raw, c.answer)
			}
		}
		// A request cut short, an empty connection: dropped.
		c := m.dial()
		c.Write([]byte(`{"v":1,"op":"sta`))
		c.CloseWrite()
		if a, err := read(t, c, 5*time.Second); err == nil {
			t.Errorf("a request cut short is answered: %s", a.raw)
		}
		c.Close()
		m.dial().Close()
		// Still there, the init untouched.
		if st := m.state(); st.Status != "created" {
			t.Fatalf("state %+v", st)
		}
		if err := syscall.Kill(m.initPid, 0); err != nil {
			t.Fatalf("the init: %v", err)
		}
	})
}

// delete kills a running init, records its exit and ends the monitor.
func TestDeleteRunning(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{})
		m.ok(`{"v":1,"op":"started"}`)
		// Two deletes at once: both answered.
		c1, c2 := m.dial(), m.dial()
		defer c1.Close()
		defer c2.Close()
		for _, c := range []*net.UnixConn{c1, c2} {
			if _, err := c.Write([]byte(`{"v":1,"op":"delete"}` + "\n")); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range []*net.UnixConn{c1, c2} {
			if a, err := read(t, c, 5*time.Second); err != nil || a.raw != `{"v":1}`+"\n" {
				t.Fatalf("delete: %+v %v", a, err)
			}
		}
		if code := m.waitExit(5 * time.Second); code != 0 {
			t.Fatalf("the monitor exited with %d", code)
		}
		if _, err := os.Lstat(m.sock); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the socket is left: %v", err)
		}
		_, e := m.readExit()
		if e.Code != 137 || e.Signal != 9 {
			t.Fatalf("exit %+v", e)
		}
		// The init is gone, reaped (by the monitor: a zombie has no cmdline).
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", m.initPid)); !errors.Is(err, os.ErrNotExist) {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", m.initPid))
			t.Fatalf("the init is still there: %s", st)
		}
		if !strings.Contains(m.shimLog(), "container ctr deleted, exiting") {
			t.Fatalf("shim.log: %s", m.shimLog())
		}
	})
}

func TestDeleteExited(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{init: "exit 5"})
		m.call(`{"v":1,"op":"wait"}`)
		m.ok(`{"v":1,"op":"delete"}`)
		if code := m.waitExit(5 * time.Second); code != 0 {
			t.Fatalf("the monitor exited with %d", code)
		}
		if _, e := m.readExit(); e.Code != 5 || e.Signal != 0 {
			t.Fatalf("exit %+v", e)
		}
		if _, err := os.Lstat(m.sock); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the socket is left: %v", err)
		}
	})
}

func TestSIGTERM(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{})
		if err := syscall.Kill(m.pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := m.waitExit(5 * time.Second); code != 0 {
			t.Fatalf("the monitor exited with %d", code)
		}
		if _, e := m.readExit(); e.Code != 137 || e.Signal != 9 {
			t.Fatalf("exit %+v", e)
		}
		if !strings.Contains(m.shimLog(), "SIGTERM: killing container ctr") || !strings.Contains(m.shimLog(), "exit recorded after SIGTERM") {
			t.Fatalf("shim.log: %s", m.shimLog())
		}
	})
}

func TestOOMKilled(t *testing.T) {
	variants(t, func(t *testing.T, bin string) {
		m := start(t, bin, opts{oom: true})
		// The counter moves while the container runs (then, with the
		// systemd driver, the file may be gone by the exit). The monitor
		// reads it on inotify's word: its read sets the file's atime,
		// made old first (relatime; on a noatime mount, after 5 s). The
		// new count is written in place, in one write: the one event
		// comes with it complete.
		events := filepath.Join(m.dir, "memory.events")
		if err := os.Chtimes(events, time.Unix(0, 0), time.Now()); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(events, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteAt([]byte("oom 1\noom_kill 1\n"), 0)
			f.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			var st unix.Stat_t
			if err := unix.Stat(events, &st); err != nil || st.Atim.Sec > 1e9 {
				break
			}
		}
		os.Remove(events)
		m.ok(`{"v":1,"op":"delete"}`)
		m.waitExit(5 * time.Second)
		if text, e := m.readExit(); !e.OOMKilled || !strings.Contains(text, `"signal":9,"oomKilled":true,"finishedAt"`) {
			t.Fatalf("exit.json %s", text)
		}
	})
}

func TestPodInit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	variants(t, func(t *testing.T, bin string) {
		sanDir := t.TempDir()
		cmd := exec.Command(bin, "pod-init", "pod")
		cmd.Args[0] = "pier-shim"
		cmd.Env = []string{"ASAN_OPTIONS=log_path=" + sanDir + "/asan:detect_leaks=0", "UBSAN_OPTIONS=halt_on_error=1:log_path=" + sanDir + "/ubsan"}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		time.Sleep(200 * time.Millisecond)
		// Confined: no capabilities, an empty root.
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		if err != nil || !strings.Contains(string(status), "CapEff:\t0000000000000000") {
			cmd.Process.Kill()
			<-done
			t.Fatalf("pod init status: %s %v (%s)", status, err, stderr.String())
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("pod init: %v: %s", err, stderr.String())
			}
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatal("the pod init outlives SIGTERM")
		}
		if r, _ := filepath.Glob(filepath.Join(sanDir, "*")); len(r) > 0 {
			t.Fatalf("sanitizer reports: %v", r)
		}
	})
}

// An idle monitor stays lean: one runs per container for its whole life.
func TestIdleMemory(t *testing.T) {
	m := start(t, bins.plain, opts{stdin: true})
	// Some work first: requests, an attachment.
	m.state()
	a := m.open(`{"v":1,"op":"attach","attach":{"stdin":true,"stdout":true,"stderr":true}}`)
	for _, f := range a.files {
		f.Close()
	}
	a.conn.Close()
	m.call(`{"v":1,"op":"hello"}`)
	if os.Getenv("PIER_MONITOR_TEST_BIN") == "" { // an older one drops it
		m.call(`{"v":1,"op":"hello","pad":"` + strings.Repeat("x", 60000) + `"}`)
	}
	time.Sleep(100 * time.Millisecond)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", m.pid))
	if err != nil {
		t.Skip(err)
	}
	kib := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[2] == "kB" {
			kib[strings.TrimSuffix(f[0], ":")], _ = strconv.Atoi(f[1])
		}
	}
	// Pss depends on how many processes share libc's pages; the private
	// pages are the monitor's own.
	private := kib["Private_Clean"] + kib["Private_Dirty"]
	t.Logf("idle monitor: Pss %d KiB, Rss %d KiB, private %d KiB", kib["Pss"], kib["Rss"], private)
	if os.Getenv("PIER_TEST_SMAPS") != "" {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", m.pid))
		t.Logf("%s", b)
	}
	if private == 0 || private > 512 {
		t.Fatalf("%d KiB private", private)
	}
}

// ---- faults that no client can cause ----

// The monitor's one allocation is a connection's: when it fails, that
// connection is dropped and the monitor serves on; the exit record and the
// answers are built in fixed buffers and stay whole.
func TestFaultAllocation(t *testing.T) {
	m := start(t, bins.fault, opts{init: "exit 7", noHello: true, env: []string{"PIER_FAULT=calloc:1"}})
	c := m.dial()
	if _, err := c.Write([]byte(`{"v":1,"op":"hello"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	if a, err := read(t, c, 10*time.Second); err == nil {
		t.Fatalf("the connection whose allocation failed was answered: %s", a.raw)
	}
	c.Close()
	if !strings.Contains(m.shimLog(), "fault: calloc call 1 fails") {
		t.Fatalf("no allocation failed: shim.log: %s", m.shimLog())
	}
	waitFor(t, "exit.json", func() bool {
		_, err := os.Stat(filepath.Join(m.dir, "exit.json"))
		return err == nil
	})
	text, e := m.readExit()
	if want := `{"v":1,"code":7,"finishedAt":"` + e.FinishedAt + `"}` + "\n"; text != want {
		t.Fatalf("exit.json %q, want %q", text, want)
	}
	if a := m.call(`{"v":1,"op":"wait"}`); a.Exit == nil || *a.Exit != *e {
		t.Fatalf("wait: %s", a.raw)
	}
}

// exit.json is written whole or not at all, and the failure logged.
func TestFaultExitFile(t *testing.T) {
	for _, fault := range []string{"fsync:1", "rename:1"} {
		t.Run(fault, func(t *testing.T) {
			m := start(t, bins.fault, opts{init: "exit 7", env: []string{"PIER_FAULT=" + fault}})
			if a := m.call(`{"v":1,"op":"wait"}`); a.Exit == nil || a.Exit.Code != 7 {
				t.Fatalf("wait: %s", a.raw)
			}
			for _, f := range []string{"exit.json", ".exit.json.tmp"} {
				if _, err := os.Stat(filepath.Join(m.dir, f)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s: %v", f, err)
				}
			}
			if !strings.Contains(m.shimLog(), "write the exit file") {
				t.Errorf("shim.log: %s", m.shimLog())
			}
		})
	}
}

// An epoll_ctl that fails at start-up (the signals' descriptor, the
// listener's) ends the monitor.
func TestFaultEpollStartup(t *testing.T) {
	for _, c := range []struct{ fault, what string }{{"epoll_ctl:1", "signals"}, {"epoll_ctl:2", "listener"}, {"epoll_ctl:3", "stdout"}} {
		t.Run(c.what, func(t *testing.T) {
			m := start(t, bins.fault, opts{noHello: true, env: []string{"PIER_FAULT=" + c.fault}})
			if code := m.waitExit(5 * time.Second); code != 1 {
				t.Fatalf("the monitor exited with %d", code)
			}
			if !strings.Contains(m.shimLog(), "epoll_ctl(add, "+c.what+")") {
				t.Fatalf("shim.log: %s", m.shimLog())
			}
		})
	}
}

// An epoll_ctl that fails for a connection drops it, logged; the monitor
// goes on.
func TestFaultEpollConnection(t *testing.T) {
	// Calls: 1 signals, 2 listener, 3 stdout, 4 stderr, then 5 the first
	// connection's add.
	t.Run("add", func(t *testing.T) {
		m := start(t, bins.fault, opts{noHello: true, env: []string{"PIER_FAULT=epoll_ctl:5"}})
		c := m.dial()
		defer c.Close()
		time.Sleep(200 * time.Millisecond) // the request comes after the accept
		c.Write([]byte(`{"v":1,"op":"hello"}` + "\n"))
		if a, err := read(t, c, 3*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the connection is not dropped: %+v %v", a, err)
		}
		if !strings.Contains(m.shimLog(), "epoll_ctl(add, connection)") {
			t.Fatalf("shim.log: %s", m.shimLog())
		}
		if a := m.call(`{"v":1,"op":"hello"}`); a.Pid != m.pid {
			t.Fatalf("hello: %s", a.raw)
		}
	})
	// 5 the wait's add, 6 its mod (held).
	t.Run("mod", func(t *testing.T) {
		m := start(t, bins.fault, opts{noHello: true, env: []string{"PIER_FAULT=epoll_ctl:6"}})
		c := m.dial()
		defer c.Close()
		c.Write([]byte(`{"v":1,"op":"wait"}` + "\n"))
		if a, err := read(t, c, 3*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("the connection is not dropped: %+v %v", a, err)
		}
		if !strings.Contains(m.shimLog(), "epoll_ctl(mod, connection)") {
			t.Fatalf("shim.log: %s", m.shimLog())
		}
		if a := m.call(`{"v":1,"op":"hello"}`); a.Pid != m.pid {
			t.Fatalf("hello: %s", a.raw)
		}
	})
}

// Without close_range (a kernel before 5.9), the helper still gets no
// descriptor of the monitor's.
func TestFaultCloseRange(t *testing.T) {
	m := start(t, bins.fault, opts{marker: true, stdin: true, env: []string{"PIER_FAULT=close_range:*"}})
	// Descriptors of the monitor's own: connections held, an attachment.
	w := m.dial()
	defer w.Close()
	w.Write([]byte(`{"v":1,"op":"wait"}` + "\n"))
	a := m.open(`{"v":1,"op":"attach","attach":{"stdin":true,"stdout":true}}`)
	defer a.conn.Close()
	for _, f := range a.files {
		defer f.Close()
	}
	if x := m.call(`{"v":1,"op":"exec","exec":{"args":["true"]}}`); x.Exec == nil {
		t.Fatalf("exec: %s", x.raw)
	}
	if !strings.Contains(m.shimLog(), "fault: close_range call") {
		t.Fatalf("close_range not called: %s", m.shimLog())
	}
	m.checkHelperFds()
}

// A delete whose init does not exit after SIGKILL is answered with an
// error naming it, after the wait (1 s in the fault build); the monitor
// stays.
func TestFaultDeleteKillFails(t *testing.T) {
	m := start(t, bins.fault, opts{env: []string{"PIER_FAULT=kill:*"}})
	t0 := time.Now()
	a := m.call(`{"v":1,"op":"delete"}`)
	if want := fmt.Sprintf("pier-shim: the container's init (pid %d) does not exit after SIGKILL", m.initPid); a.Error != want {
		t.Fatalf("delete: %s, want %s", a.raw, want)
	}
	if d := time.Since(t0); d < 900*time.Millisecond || d > 5*time.Second {
		t.Fatalf("answered after %v", d)
	}
	if _, err := os.Lstat(m.sock); err != nil {
		t.Fatalf("the socket: %v", err)
	}
	if st := m.state(); st.Status != "created" {
		t.Fatalf("state %+v", st)
	}
}

// An answer that cannot be sent is logged; the monitor goes on.
func TestFaultSend(t *testing.T) {
	m := start(t, bins.fault, opts{noHello: true, env: []string{"PIER_FAULT=sendmsg:1"}})
	c := m.dial()
	defer c.Close()
	c.Write([]byte(`{"v":1,"op":"hello"}` + "\n"))
	if a, err := read(t, c, 3*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("answered: %+v %v", a, err)
	}
	if a := m.call(`{"v":1,"op":"hello"}`); a.Pid != m.pid {
		t.Fatalf("hello: %s", a.raw)
	}
	if !strings.Contains(m.shimLog(), "answer: No buffer space available") {
		t.Fatalf("shim.log: %s", m.shimLog())
	}
}

// ---- the C unit tests and the fuzz targets ----

func TestUnit(t *testing.T) {
	sanDir := t.TempDir()
	cmd := exec.Command(bins.unit)
	cmd.Env = []string{"ASAN_OPTIONS=log_path=" + sanDir + "/asan:exitcode=66", "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=" + sanDir + "/ubsan"}
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil || !bytes.Contains(out, []byte(" passed, 0 failed")) {
		t.Fatalf("%s: %v", bins.unit, err)
	}
	if r, _ := filepath.Glob(filepath.Join(sanDir, "*")); len(r) > 0 {
		b, _ := os.ReadFile(r[0])
		t.Fatalf("sanitizer report: %s", b)
	}
}

// TestFuzz runs each fuzz target for PIER_FUZZ_SECONDS (20) where clang is
// installed (make test installs it).
func TestFuzz(t *testing.T) {
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("no clang")
	}
	secs := "20"
	if s := os.Getenv("PIER_FUZZ_SECONDS"); s != "" {
		secs = s
	}
	if out, err := exec.Command("make", "-s", "-C", root, "bin/fuzz-request", "bin/fuzz-log").CombinedOutput(); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	for _, target := range []string{"request", "log"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			work := t.TempDir()
			bin, _ := filepath.Abs(filepath.Join(root, "bin", "fuzz-"+target))
			seeds, _ := filepath.Abs(filepath.Join("test", "corpus", target))
			cmd := exec.Command(bin, "-max_total_time="+secs, "-print_final_stats=1", "-artifact_prefix="+work+"/", work, seeds)
			cmd.Dir = work
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", bin, err, out)
			}
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "stat::number_of_executed_units") || strings.Contains(l, "DONE") {
					t.Log(l)
				}
			}
		})
	}
}
