package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

const (
	loadClients       = 10
	loadPods          = 100
	loadExecRate      = 200 // ExecSync per second offered
	loadExecInFlight  = 64  // at most this many ExecSync calls wait at once
	loadDefaultExecS  = 60  // seconds of ExecSync; PIER_LOAD_EXEC_SECONDS sets it
	goroutineSlack    = 5   // see TestLoad
	fdSlack           = 3
	loadSettleTimeout = 20 * time.Second
)

// TestLoad: 10 clients, each on a connection of its own, make 100 pods of
// 2 running containers and one that has exited; ExecSync is offered at
// 200 per second for PIER_LOAD_EXEC_SECONDS (60 by default) across the
// running ones (a call is not sent while 64 wait: the achieved rate is
// logged); the 300 containers are listed; everything is removed. No
// call may fail, and pierd's goroutines and open descriptors return to
// what they were before. The figures are logged.
//
// Tolerance: the counts are taken after a warm-up cycle of the same calls,
// so that what is made once (gRPC's server transports, the CNI
// configuration cache, the metrics server's connection) is in both; what
// remains is the Go runtime's and gRPC's own background work (a finaliser,
// a timer, a keepalive of the metrics scrape's connection), a few at most:
// goroutineSlack goroutines and fdSlack descriptors.
func TestLoad(t *testing.T) {
	execSeconds := loadDefaultExecS
	if s := os.Getenv("PIER_LOAD_EXEC_SECONDS"); s != "" {
		var err error
		if execSeconds, err = strconv.Atoi(s); err != nil || execSeconds < 1 {
			t.Fatalf("PIER_LOAD_EXEC_SECONDS=%q: want a positive number", s)
		}
	}
	p := startPierd(t, "[metrics]\naddress = \"127.0.0.1:0\"\n")
	url := metricsURL(t, p)
	mustPull(t, p, reg.Ref(busyboxImg))
	logDir := t.TempDir()

	clients := make([]runtimeapi.RuntimeServiceClient, loadClients)
	conns := make([]*grpc.ClientConn, loadClients)
	dial := func() {
		for i := range conns {
			conn, err := grpc.NewClient(p.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			conns[i], clients[i] = conn, runtimeapi.NewRuntimeServiceClient(conn)
		}
	}
	hangUp := func() {
		for _, c := range conns {
			c.Close()
		}
	}

	// Warm-up: one pod's worth of every call, on every connection.
	dial()
	var cfgs []*runtimeapi.PodSandboxConfig
	for i := range loadPods + 1 {
		cfg := podConfig(fmt.Sprintf("load-%d", i))
		cfg.LogDirectory = logDir
		cfgs = append(cfgs, cfg)
	}
	warm := loadPod(ctx(t), clients[0], cfgs[loadPods])
	if warm.err != nil {
		t.Fatal(warm.err)
	}
	for _, c := range clients {
		if _, err := c.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: warm.running[0], Cmd: []string{"true"}, Timeout: 10}); err != nil {
			t.Fatal(err)
		}
	}
	removePod(ctx(t), clients[0], warm.id)
	hangUp()
	goroutines0, fds0 := settledCounts(t, p, url, -1, -1)
	t.Logf("before the load: %d goroutines, %d open descriptors", goroutines0, fds0)
	node := snapshotNode(t, p)
	dial()
	defer hangUp()

	// 100 pods × (2 running + 1 exited), 10 clients.
	start := time.Now()
	pods := make([]loadResult, loadPods)
	var wg sync.WaitGroup
	for w := range loadClients {
		wg.Go(func() {
			for i := w; i < loadPods; i += loadClients {
				pods[i] = loadPod(ctx(t), clients[w], cfgs[i])
			}
		})
	}
	wg.Wait()
	made := time.Since(start)
	var running []string
	for i, r := range pods {
		if r.err != nil {
			t.Errorf("pod %d: %v", i, r.err)
		}
		running = append(running, r.running...)
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d pods with %d containers made by %d clients in %v (%.1f containers/s)", loadPods, 3*loadPods, loadClients, made.Round(time.Millisecond), float64(3*loadPods)/made.Seconds())

	// ExecSync offered at a fixed rate; a call waits for a slot when
	// loadExecInFlight are under way (the offered rate then drops: the
	// achieved rate says so).
	total := loadExecRate * execSeconds
	var ok, failed atomic.Int64
	var latMu sync.Mutex
	lat := make([]time.Duration, 0, total)
	slots := make(chan struct{}, loadExecInFlight)
	start = time.Now()
	end := start.Add(time.Duration(execSeconds) * time.Second)
	sent := 0
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * time.Second / loadExecRate)); d > 0 {
			time.Sleep(d)
		}
		select {
		case slots <- struct{}{}:
		case <-time.After(time.Until(end)):
		}
		if time.Now().After(end) {
			break
		}
		sent++
		wg.Go(func() {
			defer func() { <-slots }()
			c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			t0 := time.Now()
			resp, err := clients[i%loadClients].ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: running[i%len(running)], Cmd: []string{"echo", "ok"}, Timeout: 20})
			if err == nil && (resp.ExitCode != 0 || string(resp.Stdout) != "ok\n") {
				err = fmt.Errorf("exit %d, stdout %q, stderr %q", resp.ExitCode, resp.Stdout, resp.Stderr)
			}
			if err != nil {
				if failed.Add(1) <= 5 {
					t.Errorf("ExecSync %d: %v", i, err)
				}
				return
			}
			ok.Add(1)
			d := time.Since(t0)
			latMu.Lock()
			lat = append(lat, d)
			latMu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(q*float64(len(lat)-1))].Round(time.Millisecond)
	}
	t.Logf("ExecSync: %d offered at %d/s over %ds, %d sent (at most %d at once), %d ok, %d failed in %v: achieved %.1f/s; latency p50 %v, p99 %v, max %v",
		total, loadExecRate, execSeconds, sent, loadExecInFlight, ok.Load(), failed.Load(), elapsed.Round(time.Millisecond), float64(ok.Load())/elapsed.Seconds(), pct(0.5), pct(0.99), pct(1))
	if ok.Load() == 0 {
		t.Error("no ExecSync succeeded")
	}

	t0 := time.Now()
	resp, err := clients[0].ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
	if err != nil || len(resp.Containers) != 3*loadPods {
		t.Fatalf("ListContainers: %d containers, want %d: %v", len(resp.GetContainers()), 3*loadPods, err)
	}
	listed := time.Since(t0)
	states := map[runtimeapi.ContainerState]int{}
	for _, c := range resp.Containers {
		states[c.State]++
	}
	if states[runtimeapi.ContainerState_CONTAINER_RUNNING] != 2*loadPods {
		t.Errorf("container states %v, want %d running", states, 2*loadPods)
	}
	t.Logf("ListContainers: %d containers in %v", len(resp.Containers), listed.Round(time.Millisecond))

	start = time.Now()
	errs := make(chan error, loadPods)
	for w := range loadClients {
		wg.Go(func() {
			for i := w; i < loadPods; i += loadClients {
				errs <- removePod(ctx(t), clients[w], pods[i].id)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	t.Logf("%d pods stopped and removed in %v", loadPods, time.Since(start).Round(time.Millisecond))
	hangUp()
	goroutines1, fds1 := settledCounts(t, p, url, goroutines0+goroutineSlack, fds0+fdSlack)
	waitSame(t, p, node)
	t.Logf("after the load: %d goroutines (before %d), %d open descriptors (before %d)", goroutines1, goroutines0, fds1, fds0)
	if goroutines1 > goroutines0+goroutineSlack || fds1 > fds0+fdSlack {
		t.Errorf("pierd holds %d goroutines and %d descriptors after the load, %d and %d before", goroutines1, fds1, goroutines0, fds0)
	}
}

type loadResult struct {
	id      string
	running []string
	err     error
}

// loadPod runs a pod with two sleeping containers and one that exits.
func loadPod(c context.Context, rt runtimeapi.RuntimeServiceClient, cfg *runtimeapi.PodSandboxConfig) loadResult {
	pod, err := rt.RunPodSandbox(c, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return loadResult{err: fmt.Errorf("RunPodSandbox %s: %w", cfg.Metadata.Name, err)}
	}
	r := loadResult{id: pod.PodSandboxId}
	for _, cc := range []*runtimeapi.ContainerConfig{
		containerConfig("a", "sleep", "1000"), containerConfig("b", "sleep", "1000"), containerConfig("done", "true"),
	} {
		ctr, err := rt.CreateContainer(c, &runtimeapi.CreateContainerRequest{PodSandboxId: r.id, Config: cc, SandboxConfig: cfg})
		if err == nil {
			_, err = rt.StartContainer(c, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId})
		}
		if err != nil {
			r.err = fmt.Errorf("pod %s, container %s: %w", cfg.Metadata.Name, cc.Metadata.Name, err)
			return r
		}
		if cc.Metadata.Name != "done" {
			r.running = append(r.running, ctr.ContainerId)
		}
	}
	return r
}

func removePod(c context.Context, rt runtimeapi.RuntimeServiceClient, id string) error {
	if _, err := rt.StopPodSandbox(c, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("StopPodSandbox %s: %w", id, err)
	}
	if _, err := rt.RemovePodSandbox(c, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		return fmt.Errorf("RemovePodSandbox %s: %w", id, err)
	}
	return nil
}

// settledCounts is pierd's goroutine count (go_goroutines) and open
// descriptors (/proc/<pid>/fd) once they stop falling, or once they are at
// most the given bounds, waiting up to loadSettleTimeout: gRPC ends a
// closed connection's goroutines, and the shims' clients close, a moment
// after the calls return.
func settledCounts(t *testing.T, p *testenv.Pierd, url string, maxGoroutines, maxFDs int) (int, int) {
	t.Helper()
	count := func() (int, int) {
		g := int(scrape(t, url)["go_goroutines"])
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		return g, len(fds)
	}
	g, f := count()
	stable := 0
	for deadline := time.Now().Add(loadSettleTimeout); time.Now().Before(deadline); {
		if maxGoroutines >= 0 && g <= maxGoroutines && f <= maxFDs {
			break
		}
		time.Sleep(250 * time.Millisecond)
		g2, f2 := count()
		if g2 == g && f2 == f {
			if stable++; stable == 8 && maxGoroutines < 0 {
				break // two seconds without a change
			}
		} else {
			stable = 0
		}
		g, f = g2, f2
	}
	return g, f
}
