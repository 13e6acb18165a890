package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/shim"
)

// execHelpersUnder lists the exec helpers ("pier-shim exec <dir> ...") of
// the containers whose state is under dir: not those that are exiting or
// have exited (their connection closes as they exit, and frees their
// slot in pierd), nor their children that have not yet exec'd the
// runtime.
func execHelpersUnder(dir string) []int {
	var pids []int
	parents := map[int]int{}
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte("pier-shim\x00exec\x00"+dir)) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join(filepath.Dir(f), "stat"))
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		// From field 3: state, ppid, ..., flags (field 9).
		fields := strings.Fields(string(stat[i+1:]))
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if err != nil || len(fields) < 7 || fields[0] == "Z" {
			continue
		}
		if flags, _ := strconv.ParseUint(fields[6], 10, 64); flags&pfExiting != 0 {
			continue
		}
		pids = append(pids, pid)
		parents[pid], _ = strconv.Atoi(fields[1])
	}
	return slices.DeleteFunc(pids, func(pid int) bool { _, child := parents[parents[pid]]; return child })
}

// pfExiting is the kernel's PF_EXITING process flag.
const pfExiting = 0x4

// TestExecSyncBounded: 100 ExecSync at once in one container all complete,
// with at most container.MaxExecsPerContainer exec helpers at a time; the
// exec helpers run in the container's cgroups; a command printing 100 MiB
// gets the first 16 MiB of it back, and pierd's memory stays bounded.
func TestExecSyncBounded(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "execbound")
	id := startContainer(t, p, podID, pod, containerConfig("sleeper", "sleep", "1000"))
	state := filepath.Join(p.Dir, "state")

	const n = 100
	stop := make(chan struct{})
	most := make(chan int)
	go func() {
		m := 0
		for {
			select {
			case <-stop:
				most <- m
				return
			case <-time.After(10 * time.Millisecond):
				h := execHelpersUnder(state)
				m = max(m, len(h))
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := fmt.Sprintf("ok %d", i)
			resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "sleep 0.2; echo " + want}, Timeout: 100})
			if err == nil && (resp.ExitCode != 0 || strings.TrimSpace(string(resp.Stdout)) != want) {
				err = fmt.Errorf("exec %d: code %d, stdout %q", i, resp.ExitCode, resp.Stdout)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(stop)
	helpers := <-most
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("%d concurrent ExecSync: at most %d exec helpers at once", n, helpers)
	if helpers > container.MaxExecsPerContainer || helpers == 0 {
		t.Errorf("%d exec helpers at once, want 1 to %d", helpers, container.MaxExecsPerContainer)
	}

	// The helper is in the container's cgroups (their paths end in its id).
	done := make(chan error, 1)
	go func() {
		_, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sleep", "2"}, Timeout: 100})
		done <- err
	}()
	var cg []byte
	for wait := true; wait; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			wait = false
		case <-time.After(50 * time.Millisecond):
			for _, pid := range execHelpersUnder(state) {
				if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); err == nil {
					cg = b
				}
			}
		}
	}
	if !strings.Contains(string(cg), id) {
		t.Errorf("the exec helper is not in the container's cgroups:\n%s", cg)
	}

	// 100 MiB of output: what comes back fits the 16 MiB message that
	// kubelet and crictl accept (gRPC's default for a client, kept here).
	conn, err := grpc.NewClient(p.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	big := runtimeapi.NewRuntimeServiceClient(conn)
	before := statusKiB(t, p.Pid(), "VmHWM")
	resp, err := big.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "head -c 104857600 /dev/zero; echo done >&2"}, Timeout: 100})
	if err != nil {
		t.Fatal(err)
	}
	after := statusKiB(t, p.Pid(), "VmHWM")
	t.Logf("100 MiB exec: %d bytes back; pierd's peak RSS %d -> %d KiB", len(resp.Stdout), before, after)
	if len(resp.Stdout) != shim.ExecOutputBudget-1<<20 || string(resp.Stderr) != "done\n" || resp.ExitCode != 0 {
		t.Errorf("100 MiB exec: %d bytes, stderr %q, code %d", len(resp.Stdout), resp.Stderr, resp.ExitCode)
	}
}

// statusKiB reads a "<field>: N kB" line of /proc/<pid>/status.
func statusKiB(t *testing.T, pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestExecSyncAsTheContainerExits: an ExecSync that races the container's
// exit either runs or fails with FailedPrecondition (the container is not
// running), never Unknown with the runtime's message ("cannot exec in a
// stopped container", a setns of a namespace that is gone): FuzzCRIServer
// found those.
func TestExecSyncAsTheContainerExits(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "exec-exiting")
	codesSeen := map[codes.Code]int{}
	for i := 0; i < 8; i++ {
		id := startContainer(t, p, podID, pod, containerConfig(fmt.Sprintf("x%d", i), "sleep", "0.3"))
		for n := 0; n < 200; n++ {
			_, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"true"}, Timeout: 5})
			codesSeen[status.Code(err)]++
			if err == nil {
				continue
			}
			if status.Code(err) != codes.FailedPrecondition {
				t.Fatalf("ExecSync as the container exits: %v, want FailedPrecondition", err)
			}
			break
		}
	}
	t.Logf("ExecSync answers as 8 containers exited: %v", codesSeen)
}
