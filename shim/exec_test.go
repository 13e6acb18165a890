package shim

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pier-runtime/pier/shim/protocol"
)

// execHelpers lists the exec helpers ("pier-shim exec") the monitor monitor
// has running.
func execHelpers(monitor int) []int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", monitor, monitor))
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.HasPrefix(string(cmd), "pier-shim\x00exec\x00") || strings.Contains(string(cmd), "/pier-shim\x00exec\x00") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// statusKiB reads a "<field>: N kB" line of /proc/<pid>/status.
func statusKiB(pid int, field string) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

// TestExecBigOutput: a process printing 100 MiB through Exec costs neither
// the helper nor the client more than the 16 MiB the answer keeps. The
// helper holds none of it (the output goes to the client's pipes), and the
// client decodes no giant JSON line.
func TestExecBigOutput(t *testing.T) {
	c := newContainer(t, "sleep", "100")
	client, monitor := c.start(t)
	ctx := ctxT(t)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	type result struct {
		r   *protocol.ExecResult
		err error
	}
	done := make(chan result, 1)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	go func() {
		r, err := client.Exec(ctx, protocol.ExecRequest{Args: []string{"sh", "-c", "head -c 104857600 /dev/zero; echo done >&2; exec sleep 1"}})
		done <- result{r, err}
	}()
	peak := map[int]int{} // helper pid -> VmHWM
	var res result
	for res.r == nil && res.err == nil {
		select {
		case res = <-done:
		case <-time.After(20 * time.Millisecond):
			for _, pid := range execHelpers(monitor) {
				if hwm := statusKiB(pid, "VmHWM"); hwm > peak[pid] {
					peak[pid] = hwm
				}
			}
		}
	}
	runtime.ReadMemStats(&after)
	if res.err != nil {
		t.Fatal(res.err)
	}
	if len(res.r.Stdout) != ExecOutputBudget-execStderrShare || string(res.r.Stderr) != "done\n" || res.r.ExitCode != 0 {
		t.Errorf("100 MiB exec: %d bytes of output, stderr %q, code %d", len(res.r.Stdout), res.r.Stderr, res.r.ExitCode)
	}
	if len(peak) == 0 {
		t.Fatal("no exec helper seen")
	}
	for pid, hwm := range peak {
		t.Logf("exec helper %d: peak RSS %d KiB", pid, hwm)
		if hwm > 12<<10 {
			t.Errorf("exec helper %d: peak RSS %d KiB, want under 12 MiB", pid, hwm)
		}
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("client: %d KiB allocated for the exec", alloc>>10)
	// TotalAlloc is the test process's: goroutines that earlier tests left
	// (their clients, log readers) allocate meanwhile, more on a busy
	// machine (46 MiB seen in CI). A client that decoded the 100 MiB as one
	// line would allocate over 100 MiB.
	if alloc > 4*protocol.MaxExecOutput+8<<20 {
		t.Errorf("client allocated %d KiB for a 16 MiB answer", alloc>>10)
	}
}

// TestExecHelperCgroup: the exec helper runs in the container's cgroups,
// not its monitor's.
func TestExecHelperCgroup(t *testing.T) {
	c := newContainer(t, "sleep", "100")
	client, monitor := c.start(t)
	ctx := ctxT(t)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	st, err := client.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(want), c.id) {
		t.Fatalf("the container's init is in no cgroup of its own:\n%s", want)
	}
	done := make(chan error, 1)
	go func() {
		_, err := client.Exec(ctx, protocol.ExecRequest{Args: []string{"sleep", "3"}})
		done <- err
	}()
	// The helper's cgroups once it has run a while (the last look before
	// the exec ends).
	var got []byte
	for err := error(nil); ; {
		select {
		case err = <-done:
		case <-time.After(50 * time.Millisecond):
			for _, pid := range execHelpers(monitor) {
				if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil {
					got = b
				}
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	if got == nil {
		t.Fatal("no exec helper seen")
	}
	if string(got) != string(want) {
		t.Errorf("exec helper's cgroups:\n%s\nthe container's:\n%s", got, want)
	}
}

// TestExecOutputBudget: the two streams together never keep more than
// ExecOutputBudget, standard error keeps its share however much standard
// output came first, and standard output gets the share back once standard
// error has ended.
func TestExecOutputBudget(t *testing.T) {
	b := &outputBudget{left: ExecOutputBudget, reserved: execStderrShare}
	out := 0
	for i := 0; i < 1000; i++ {
		out += b.take(false, 32<<10)
	}
	if out != ExecOutputBudget-execStderrShare {
		t.Fatalf("standard output kept %d bytes, want %d", out, ExecOutputBudget-execStderrShare)
	}
	if got := b.take(true, 5); got != 5 {
		t.Fatalf("standard error kept %d of 5 bytes", got)
	}
	b.release()
	if got := b.take(false, 2*execStderrShare); got != execStderrShare-5 {
		t.Fatalf("standard output kept %d bytes after standard error ended, want %d", got, execStderrShare-5)
	}
	if got := b.take(true, 1); got != 0 || b.left != 0 {
		t.Fatalf("over the budget: kept %d, %d left", got, b.left)
	}
}

// TestExecBothStreamsFitOneMessage: a process that floods both streams gets
// back no more than one CRI message can carry.
func TestExecBothStreamsFitOneMessage(t *testing.T) {
	c := newContainer(t, "sleep", "100")
	client, _ := c.start(t)
	ctx := ctxT(t)
	if err := c.run(ctx, client); err != nil {
		t.Fatal(err)
	}
	r, err := client.Exec(ctx, protocol.ExecRequest{Args: []string{"sh", "-c", "head -c 20000000 /dev/zero & head -c 20000000 /dev/zero >&2; wait"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(r.Stdout) + len(r.Stderr); n != ExecOutputBudget || len(r.Stderr) < execStderrShare {
		t.Errorf("flooded streams: %d + %d bytes back, want %d in all, at least %d of standard error", len(r.Stdout), len(r.Stderr), ExecOutputBudget, execStderrShare)
	}
}
