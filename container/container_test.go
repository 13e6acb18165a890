package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/pier-runtime/pier/internal/proc"
	"github.com/pier-runtime/pier/shim"
	"github.com/pier-runtime/pier/shim/protocol"
)

// TestNewDirs: the roots of the containers' directories may be passed
// through, not listed; the shims' sockets are root's alone, also where an
// older pier made them passable.
func TestNewDirs(t *testing.T) {
	base := t.TempDir()
	opts := Options{Root: filepath.Join(base, "root"), State: filepath.Join(base, "state"), SocketDir: filepath.Join(base, "s")}
	os.Mkdir(opts.SocketDir, 0o711)
	if _, err := New(opts); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]os.FileMode{opts.Root: 0o711, opts.State: 0o711, opts.SocketDir: 0o700} {
		if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", dir, fi.Mode().Perm(), err, want)
		}
	}
}

func TestCheckLogPath(t *testing.T) {
	for _, c := range []struct {
		dir, name string
		ok        bool
	}{
		{"/var/log/pods/ns_p_uid", "c/0.log", true},
		{"/var/log/pods/ns_p_uid", "c.log", true},
		{"", "../../x", true}, // no log directory: no log
		{"/var/log/pods/ns_p_uid", "", true},
		{"/var/log/pods/ns_p_uid", "../../../../tmp/y", false},
		{"/var/log/pods/ns_p_uid", "c/../../y", false},
		{"/var/log/pods/ns_p_uid", "..", false},
		{"/var/log/pods/ns_p_uid", "/tmp/y", false},
		{"/var/log/pods/ns_p_uid", "c\x00.log", false},
		{"relative/dir", "c.log", false},
	} {
		err := checkLogPath(c.dir, c.name)
		if c.ok && err != nil || !c.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("checkLogPath(%q, %q) = %v", c.dir, c.name, err)
		}
	}
}

func TestMakeLogDir(t *testing.T) {
	base := t.TempDir()
	dir, outside := filepath.Join(base, "pods", "ns_p_uid"), filepath.Join(base, "outside")
	os.Mkdir(outside, 0o755)
	if err := makeLogDir(dir, "c/0.log"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "c")); err != nil || !fi.IsDir() {
		t.Errorf("c: %v", err)
	}
	os.Symlink(outside, filepath.Join(dir, "link"))
	if err := makeLogDir(dir, "link/sub/0.log"); err == nil {
		t.Error("made a directory through a symbolic link")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("made outside: %v", entries)
	}
}

// TestCensusAndOnExit: the census counts containers by state and the
// shims followed; each recorded exit is told to OnExit with its reason.
func TestCensusAndOnExit(t *testing.T) {
	var reasons []string
	m := &Manager{
		opts:       Options{Root: t.TempDir(), OnExit: func(r string) { reasons = append(reasons, r) }},
		containers: map[string]*Container{},
		live:       map[string]*live{},
	}
	for id, st := range map[string]State{"a": Running, "b": Running, "c": Created, "d": Exited} {
		if err := os.Mkdir(m.dir(id), 0o700); err != nil {
			t.Fatal(err)
		}
		m.containers[id] = &Container{Version: recordVersion, ID: id, State: st}
		if st != Exited {
			m.live[id] = newLive()
		}
	}
	states, shims := m.Census()
	if states[Running] != 2 || states[Created] != 1 || states[Exited] != 1 || shims != 3 {
		t.Fatalf("census %v, %d shims", states, shims)
	}
	m.recordExit(m.containers["a"], &protocol.Exit{Code: 137, Signal: 9, OOMKilled: true, FinishedAt: time.Now()})
	m.recordExit(m.containers["b"], &protocol.Exit{Code: 0, FinishedAt: time.Now()})
	if fmt.Sprint(reasons) != "[OOMKilled Completed]" {
		t.Fatalf("OnExit saw %v", reasons)
	}
	if states, _ := m.Census(); states[Running] != 0 || states[Exited] != 3 {
		t.Fatalf("census after exits %v", states)
	}
}

// TestShimOfAnotherBootIsGone: a record whose shim pid and start time match
// a running pier-shim, but that was made in another boot, has no shim.
func TestShimOfAnotherBootIsGone(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	cmd.Args[0] = "pier-shim"
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	c := &Container{ShimPid: pid, ShimStart: proc.StartTime(pid), ShimBoot: proc.BootID()}
	if !shimAlive(c) {
		t.Fatal("the shim of this boot is not found")
	}
	c.ShimBoot = "00000000-0000-0000-0000-000000000000"
	if shimAlive(c) {
		t.Error("a shim recorded in another boot is taken for alive")
	}
	c.ShimBoot = "" // an older pier's record
	if !shimAlive(c) {
		t.Error("a record without a boot ID lost its shim")
	}
}

// TestExecSyncWaitsForASlot: an ExecSync beyond the bounds waits for a
// slot while its timeout and context allow, then fails with ErrBusy (or
// its context's error), running nothing.
func TestExecSyncWaitsForASlot(t *testing.T) {
	m := &Manager{containers: map[string]*Container{}, live: map[string]*live{}, execs: make(chan struct{}, MaxExecs)}
	m.containers["c"] = &Container{Version: recordVersion, ID: "c", State: Running}
	l := newLive()
	l.client = &shim.Client{} // never reached
	m.live["c"] = l
	for range MaxExecsPerContainer {
		l.execs <- struct{}{}
	}
	_, err := m.ExecSync(context.Background(), "c", []string{"true"}, time.Millisecond)
	if !errors.Is(err, ErrBusy) {
		t.Errorf("ExecSync with every slot of its container taken: %v, want ErrBusy", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.ExecSync(ctx, "c", []string{"true"}, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("ExecSync whose context ended while it waited: %v", err)
	}
	// A slot that comes free is taken.
	<-l.execs
	for range MaxExecs {
		m.execs <- struct{}{}
	}
	if _, err := m.ExecSync(context.Background(), "c", []string{"true"}, time.Millisecond); !errors.Is(err, ErrBusy) {
		t.Errorf("ExecSync with every slot of the node taken: %v, want ErrBusy", err)
	}
	if len(l.execs) != MaxExecsPerContainer-1 {
		t.Errorf("the container's slot was not given back: %d taken", len(l.execs))
	}
}
