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
