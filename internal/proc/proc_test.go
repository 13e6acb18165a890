package proc

import (
	"os"
	"os/exec"
	"testing"
)

func TestStartTimeNamesOneProcess(t *testing.T) {
	self := os.Getpid()
	start := StartTime(self)
	if start == 0 || StartTime(self) != start {
		t.Fatalf("start time of this process: %d", start)
	}
	if StartTime(1<<30) != 0 {
		t.Error("a start time for a pid that cannot exist")
	}
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if s := StartTime(cmd.Process.Pid); s < start {
		t.Errorf("a child started at %d, before its parent (%d)", s, start)
	}
	// Not a shim, whatever its start time.
	if IsShim(cmd.Process.Pid, 0) || IsShim(cmd.Process.Pid, StartTime(cmd.Process.Pid)) {
		t.Error("sleep taken for a shim")
	}
}

// TestOtherBootIsGone: a record with the right pid and start time but
// another boot's ID names no process; one without a boot ID (an older
// pier's) still does.
func TestOtherBootIsGone(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	cmd.Args[0] = "pier-shim" // as IsShim knows pier's processes
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	start := StartTime(pid)
	boot := BootID()
	if boot == "" {
		t.Fatal("no boot ID")
	}
	if !IsShimOf(pid, start, boot) || !IsShimOf(pid, start, "") {
		t.Fatalf("pier-shim %d (start %d) of this boot not found", pid, start)
	}
	saved := bootID
	defer func() { bootID = saved }()
	bootID = func() string { return "after-a-reboot" }
	if IsShimOf(pid, start, boot) {
		t.Error("a process recorded in another boot is taken for this one's")
	}
	if !IsShimOf(pid, start, "") {
		t.Error("a record without a boot ID is taken for gone")
	}
}
