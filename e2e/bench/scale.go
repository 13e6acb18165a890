package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// The scale benchmark starts n pods of two running busybox containers each
// from scaleClients concurrent Go CRI clients, for every n asked (10, 50 and
// 100 by default), and measures with them running: the time to start them
// all; the memory each pod costs (PSS of the runtime's helper processes
// plus pierd's growth); pierd's RSS and goroutines; and the latency of
// listing and of stats, through crictl and a Go client. It then removes the
// pods, checks that nothing of them is left, tells for each figure whether
// it grows faster than linearly with the number of pods, and can draw the
// curves as an SVG file.
const (
	scaleClients    = 10 // concurrent Go clients starting the pods
	scaleCalls      = 10 // timed calls of each listing
	scaleContainers = 2  // containers a pod
)

// scaleCgroupParent holds the pods' cgroups, one parent a pod as kubelet
// makes them.
const scaleCgroupParent = "/pier-bench-scale"

// scaleHelpers are the per-container helper processes of pier and its
// peers, counted (with helperProcs) when their command line names a pod or
// container of the run.
var scaleHelpers = []string{"pier-shim", "pier-shim-monitor", "containerd-shim-runc-v2", "conmon"}

// scaleLatencies are the calls timed, in the order they are printed:
// `crictl version` (one Version RPC) is crictl's own start-up, which the
// growth verdicts of the other crictl calls leave out.
var scaleLatencies = []string{"crictl version", "crictl ps", "crictl pods", "crictl stats", "ListContainerStats", "ListPodSandboxStats"}

// scalePoint is what was measured with pods pods running.
type scalePoint struct {
	pods       int
	start      time.Duration   // to start them all
	podStart   []time.Duration // each pod's runp + 2 × (create + start)
	remove     time.Duration   // to remove them all
	helpers    int             // helper processes the pods added
	helpersKB  int             // their PSS
	growthKB   int             // pierd's PSS growth; 0 for another runtime
	rssKB      int             // pierd's RSS; 0 for another runtime
	goroutines int             // pierd's; 0 when unknown
	idleCPU    float64         // pierd's CPU, in cores, with the pods running and no call
	nodeBusy   float64         // share of the node's CPU busy with no call (others' load)
	latency    map[string][]time.Duration
}

// memPerPodKB is the memory a pod costs: its helpers' PSS and pierd's
// growth (a pod never costs pierd less than nothing, though its heap may
// shrink in a GC meanwhile).
func (p scalePoint) memPerPodKB() float64 {
	return float64(p.helpersKB+max(p.growthKB, 0)) / float64(p.pods)
}

// benchScale runs the scale benchmark at each of sizes pods against
// endpoint, or a fresh pierd for each size, and writes the curves to plot
// when it is not empty.
func benchScale(endpoint, pierd string, sizes []int, plot string) error {
	var points []scalePoint
	target := "pier"
	if endpoint != "" {
		target = endpoint
	}
	fmt.Printf("\nscale (%s; %d busybox sleep containers a pod, started by %d concurrent Go clients; %s)\n",
		target, scaleContainers, scaleClients, map[bool]string{true: "a fresh pierd for each size", false: "the runtime as it is"}[endpoint == ""])
	for _, n := range sizes {
		p, err := scaleOnce(endpoint, pierd, n)
		if err != nil {
			return fmt.Errorf("scale, %d pods: %w", n, err)
		}
		points = append(points, p)
	}
	printScaleGrowth(points)
	if plot != "" {
		if err := writeScalePlot(plot, target, points); err != nil {
			return err
		}
		fmt.Printf("  plot: %s\n", plot)
	}
	return nil
}

func freeLoopbackPort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("no free loopback port for pierd's metrics: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// scaleOnce measures one size.
func scaleOnce(endpoint, pierd string, n int) (pt scalePoint, err error) {
	pt = scalePoint{pods: n, latency: map[string][]time.Duration{}}
	env, err := newEnvWith(endpoint, pierd, envOptions{bridge: "pierscale0", subnet: "10.98.0.0/16", metrics: true})
	if err != nil {
		return pt, err
	}
	defer env.close()
	ctx, ref, done, err := env.busybox(endpoint != "")
	if err != nil {
		return pt, err
	}
	defer done()
	defer testenv.RemoveCgroupTree(scaleCgroupParent)

	// Ten clients, each with a connection of its own, as ten kubelet
	// workers on ten connections would be.
	clients := make([]runtimeapi.RuntimeServiceClient, scaleClients)
	for i := range clients {
		conn, err := grpc.NewClient(env.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return pt, err
		}
		defer conn.Close()
		clients[i] = runtimeapi.NewRuntimeServiceClient(conn)
	}

	pssBefore := pss(env.pid)
	var (
		mu   sync.Mutex
		pods []string
	)
	removed := false
	defer func() {
		if !removed {
			for _, id := range pods {
				env.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
			}
		}
	}()

	// Start the pods.
	jobs := make(chan int, n)
	for i := range n {
		jobs <- i
	}
	close(jobs)
	errs := make([]error, scaleClients)
	var wg sync.WaitGroup
	start := time.Now()
	for w, rt := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				t0 := time.Now()
				id, err := startScalePod(ctx, rt, ref, i)
				mu.Lock()
				if id != "" {
					pods = append(pods, id)
				}
				if err == nil {
					pt.podStart = append(pt.podStart, time.Since(t0))
				}
				mu.Unlock()
				if err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	pt.start = time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return pt, err
	}
	ctrs, err := checkRunning(ctx, env.runtime, pods)
	if err != nil {
		return pt, err
	}
	// The pods' helpers are those whose command line names one of them or
	// their containers (others may run pods on this node meanwhile).
	marks := slices.Concat(pods, ctrs)

	// Memory, RSS and goroutines with the pods running, once the start's
	// transient goroutines have ended.
	time.Sleep(time.Second)
	// pierd's own work with the pods running and nobody calling, and the
	// node's meanwhile: others' load, which the figures suffer from.
	const window = 2 * time.Second
	before := cpuTicks(env.pid)
	busy0, total0 := nodeCPU()
	time.Sleep(window)
	if busy1, total1 := nodeCPU(); total1 > total0 {
		pt.nodeBusy = float64(busy1-busy0) / float64(total1-total0)
	}
	if env.pid != 0 {
		pt.idleCPU = float64(cpuTicks(env.pid)-before) / clockTicks / window.Seconds()
	}
	for _, pid := range helperProcs(scaleHelpers, marks) {
		pt.helpers++
		pt.helpersKB += pss(pid)
	}
	if env.pid != 0 {
		pt.growthKB = pss(env.pid) - pssBefore
		pt.rssKB = rssKB(env.pid)
	}
	if env.metrics != "" {
		if pt.goroutines, err = goroutines(env.metrics); err != nil {
			return pt, err
		}
	}

	// Latencies.
	crictl := func(args ...string) func() (int, error) {
		return func() (int, error) {
			out, err := exec.Command("crictl", append([]string{"--runtime-endpoint", env.endpoint, "--image-endpoint", env.endpoint}, args...)...).Output()
			if err != nil {
				return 0, fmt.Errorf("crictl %s: %v", strings.Join(args, " "), err)
			}
			return strings.Count(string(out), "\n") - 1, nil // less the header
		}
	}
	calls := []struct {
		name string
		want int
		call func() (int, error)
	}{
		{"crictl version", 0, crictl("version")},
		{"crictl ps", n * scaleContainers, crictl("ps")},
		{"crictl pods", n, crictl("pods")},
		// -s 0: crictl stats otherwise waits a second between two samples
		// to show a CPU percentage.
		{"crictl stats", n * scaleContainers, crictl("stats", "-s", "0")},
		{"ListContainerStats", n * scaleContainers, func() (int, error) {
			r, err := env.runtime.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
			if err != nil {
				return 0, err
			}
			return len(r.Stats), nil
		}},
		{"ListPodSandboxStats", n, func() (int, error) {
			r, err := env.runtime.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
			if err != nil {
				return 0, err
			}
			return len(r.Stats), nil
		}},
	}
	// In rounds of one call each, so that a load that comes and goes on
	// the node weighs on all of them alike.
	for range scaleCalls {
		for _, c := range calls {
			t0 := time.Now()
			got, err := c.call()
			d := time.Since(t0)
			if err != nil {
				return pt, err
			}
			if got < c.want {
				return pt, fmt.Errorf("%s listed %d items, want at least %d", c.name, got, c.want)
			}
			pt.latency[c.name] = append(pt.latency[c.name], d)
		}
	}

	// Remove the pods, from the ten clients too, and check that nothing of
	// them is left.
	jobs2 := make(chan string, len(pods))
	for _, id := range pods {
		jobs2 <- id
	}
	close(jobs2)
	start = time.Now()
	for w, rt := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range jobs2 {
				if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
					errs[w] = fmt.Errorf("RemovePodSandbox %s: %w", id, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	pt.remove = time.Since(start)
	removed = true
	if err := errors.Join(errs...); err != nil {
		return pt, err
	}
	left := leftBehind(ctx, env.runtime, pods, marks, env.network)

	fmt.Printf("  %d pods (%d containers): started in %s (a pod: median %s, p95 %s), removed in %s\n",
		n, n*scaleContainers, pt.start.Round(time.Millisecond), percentile(pt.podStart, 50), percentile(pt.podStart, 95), pt.remove.Round(time.Millisecond))
	mem := fmt.Sprintf("helpers: %d processes, %d KiB PSS", pt.helpers, pt.helpersKB)
	if env.pid != 0 {
		mem += fmt.Sprintf("; pierd PSS %+d KiB", pt.growthKB)
	}
	fmt.Printf("    memory per pod %.0f KiB (%s)\n", pt.memPerPodKB(), mem)
	if env.pid != 0 {
		g := "goroutines unknown"
		if pt.goroutines != 0 {
			g = fmt.Sprintf("%d goroutines", pt.goroutines)
		}
		fmt.Printf("    pierd: RSS %d KiB, %s, CPU %.1f%% of a core with no call\n", pt.rssKB, g, pt.idleCPU*100)
	}
	fmt.Printf("    node: CPU %.0f%% busy with the pods running and no call (others' load)\n", pt.nodeBusy*100)
	fmt.Printf("    latency, median / p95 of %d calls:\n", scaleCalls)
	for _, name := range scaleLatencies {
		l := pt.latency[name]
		fmt.Printf("      %-20s %8s / %-8s\n", name, percentile(l, 50), percentile(l, 95))
	}
	if left != nil {
		return pt, fmt.Errorf("left behind after removing the pods: %w", left)
	}
	fmt.Printf("    left behind after removing them: nothing\n")
	return pt, nil
}

// startScalePod starts pod i with its containers through rt and returns
// its id ("" when RunPodSandbox failed).
func startScalePod(ctx context.Context, rt runtimeapi.RuntimeServiceClient, ref string, i int) (string, error) {
	cfg := podConfig(fmt.Sprintf("scale-%d", i))
	cfg.Linux.CgroupParent = fmt.Sprintf("%s/pod%d", scaleCgroupParent, i)
	p, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return "", fmt.Errorf("RunPodSandbox: %w", err)
	}
	for c := range scaleContainers {
		r, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.PodSandboxId, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: fmt.Sprintf("sleep%d", c)},
				Image: &runtimeapi.ImageSpec{Image: ref}, Command: []string{"sleep", "100000"}}})
		if err != nil {
			return p.PodSandboxId, fmt.Errorf("CreateContainer: %w", err)
		}
		if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: r.ContainerId}); err != nil {
			return p.PodSandboxId, fmt.Errorf("StartContainer: %w", err)
		}
	}
	return p.PodSandboxId, nil
}

// checkRunning checks that every container of pods runs, and returns
// their ids.
func checkRunning(ctx context.Context, rt runtimeapi.RuntimeServiceClient, pods []string) ([]string, error) {
	r, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}}})
	if err != nil {
		return nil, err
	}
	ours := map[string]bool{}
	for _, id := range pods {
		ours[id] = true
	}
	var running []string
	for _, c := range r.Containers {
		if ours[c.PodSandboxId] {
			running = append(running, c.Id)
		}
	}
	if want := len(pods) * scaleContainers; len(running) != want {
		return nil, fmt.Errorf("%d containers of the pods run, want %d", len(running), want)
	}
	return running, nil
}

// leftBehind tells what is left of pods once they were removed: pods or
// containers the runtime still lists, helper processes, processes in the
// pods' cgroups, and (with a network of the benchmark's own) allocated IPs.
func leftBehind(ctx context.Context, rt runtimeapi.RuntimeServiceClient, pods, marks []string, network *testenv.Network) error {
	ours := map[string]bool{}
	for _, id := range pods {
		ours[id] = true
	}
	var errs []error
	if r, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err != nil {
		errs = append(errs, err)
	} else {
		for _, p := range r.Items {
			if ours[p.Id] {
				errs = append(errs, fmt.Errorf("pod %s is still listed", p.Id))
			}
		}
	}
	if r, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{}); err != nil {
		errs = append(errs, err)
	} else {
		for _, c := range r.Containers {
			if ours[c.PodSandboxId] {
				errs = append(errs, fmt.Errorf("container %s is still listed", c.Id))
			}
		}
	}
	// Helpers may take a moment to exit after their container is gone.
	var extra []int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if extra = helperProcs(scaleHelpers, marks); len(extra) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(extra) > 0 {
		errs = append(errs, fmt.Errorf("helper processes %v still run", extra))
	}
	if mounts, err := testenv.CgroupMounts(); err == nil {
		for _, m := range mounts {
			filepath.WalkDir(filepath.Join(m, scaleCgroupParent), func(path string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					if b, _ := os.ReadFile(filepath.Join(path, "cgroup.procs")); len(strings.TrimSpace(string(b))) > 0 {
						errs = append(errs, fmt.Errorf("processes still in cgroup %s", path))
					}
				}
				return nil
			})
		}
	}
	if network != nil {
		if a := network.Allocations(); a != 0 {
			errs = append(errs, fmt.Errorf("%d pod IPs still allocated", a))
		}
	}
	return errors.Join(errs...)
}

// clockTicks is the kernel's USER_HZ, the unit of /proc's CPU times: 100
// on every Linux architecture Go runs on.
const clockTicks = 100

// cpuTicks is a process's user and system CPU time, in clock ticks.
func cpuTicks(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (in parentheses): state is field 3, utime
	// and stime fields 14 and 15.
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s
}

// nodeCPU is the node's busy and total CPU time so far, in clock ticks,
// from /proc/stat.
func nodeCPU() (busy, total uint64) {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i == 8 || i == 9 {
			break // guest time is counted in user time already
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// goroutines reads go_goroutines from pierd's Prometheus metrics.
func goroutines(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, fmt.Errorf("pierd's metrics: %w", err)
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("pierd's metrics: go_goroutines %q: %w", v, err)
			}
			return int(f), nil
		}
	}
	return 0, fmt.Errorf("pierd's metrics at %s have no go_goroutines (%v)", url, s.Err())
}

// scaleFigure is one quantity measured at every size, for the growth
// verdicts and the plot.
type scaleFigure struct {
	name, unit string
	values     []float64 // total at each size (not per pod)
	perPod     string    // what the per-pod figure is called
	noise      []float64 // spread of values' measurements at each size (p95 − median), nil when measured once
}

// scaleFigures lists the quantities measured at every size; pierd's own
// are left out for another runtime.
func scaleFigures(points []scalePoint) []scaleFigure {
	col := func(f func(scalePoint) float64) []float64 {
		v := make([]float64, len(points))
		for i, p := range points {
			v[i] = f(p)
		}
		return v
	}
	figs := []scaleFigure{
		{"start all pods", "s", col(func(p scalePoint) float64 { return p.start.Seconds() }), "per pod", nil},
		{"remove all pods", "s", col(func(p scalePoint) float64 { return p.remove.Seconds() }), "per pod", nil},
		{"memory of the pods (" + memWhat(points) + ")", "MiB", col(func(p scalePoint) float64 { return p.memPerPodKB() * float64(p.pods) / 1024 }), "per pod", nil},
	}
	if points[0].rssKB != 0 {
		figs = append(figs, scaleFigure{"pierd RSS", "MiB", col(func(p scalePoint) float64 { return float64(p.rssKB) / 1024 }), "per pod", nil})
	}
	if points[0].rssKB != 0 {
		figs = append(figs, scaleFigure{"pierd CPU with the pods running, idle", "% of a core", col(func(p scalePoint) float64 { return p.idleCPU * 100 }), "per pod", nil})
	}
	if points[0].goroutines != 0 {
		figs = append(figs, scaleFigure{"pierd goroutines", "", col(func(p scalePoint) float64 { return float64(p.goroutines) }), "per pod", nil})
	}
	ms := func(p scalePoint, name string, pct int) float64 {
		return float64(percentile(p.latency[name], pct)) / float64(time.Millisecond)
	}
	spread := func(p scalePoint, name string) float64 { return ms(p, name, 95) - ms(p, name, 50) }
	for _, name := range scaleLatencies[1:] {
		if strings.HasPrefix(name, "crictl ") {
			figs = append(figs, scaleFigure{name + " less crictl version (median)", "ms", col(func(p scalePoint) float64 {
				return max(ms(p, name, 50)-ms(p, "crictl version", 50), 0)
			}), "per pod listed", col(func(p scalePoint) float64 { return spread(p, name) + spread(p, "crictl version") })})
			continue
		}
		figs = append(figs, scaleFigure{name + " (median)", "ms", col(func(p scalePoint) float64 { return ms(p, name, 50) }), "per pod listed",
			col(func(p scalePoint) float64 { return spread(p, name) })})
	}
	return figs
}

// memWhat says what the memory figures count: pierd's growth only where
// the benchmark started pierd.
func memWhat(points []scalePoint) string {
	if points[0].rssKB != 0 {
		return "PSS of helpers + pierd growth"
	}
	return "PSS of helpers"
}

// Growth tolerances: measurements on a shared machine are noisy.
const (
	perPodTolerance = 1.4  // per-pod figure may rise this much from a size to the next
	slopeTolerance  = 1.5  // last slope may be this many times the one before...
	excessTolerance = 0.25 // ...or exceed its extrapolation by at most this share of the value
)

// growthVerdict tells whether values (at pods) grow faster than linearly:
// when the per-pod figure rises by more than perPodTolerance from a size
// to the next (for f(n) = a + b·n with a ≥ 0 it never rises), or when the
// slope of the last step exceeds slopeTolerance times the one before and
// the last value lies more than excessTolerance above the line through the
// two before (a curve bending up behind a large constant). A rise within
// noise (the spread of the figure's own measurements, when it has them)
// is not counted.
func growthVerdict(pods []int, values, noise []float64) (ok bool, why string) {
	spread := func(i int) float64 {
		if noise == nil {
			return 0
		}
		return max(noise[i], 0)
	}
	for i := 1; i < len(pods); i++ {
		a, b := values[i-1]/float64(pods[i-1]), values[i]/float64(pods[i])
		over := values[i] - a*perPodTolerance*float64(pods[i])  // above the tolerated
		if a > 0 && b > a*perPodTolerance && over > spread(i) { // (a figure of 0 is all noise)
			return false, fmt.Sprintf("per-pod figure %.3g at %d pods, %.3g at %d", a, pods[i-1], b, pods[i])
		}
	}
	if k := len(pods) - 1; k >= 2 {
		s1 := (values[k-1] - values[k-2]) / float64(pods[k-1]-pods[k-2])
		s2 := (values[k] - values[k-1]) / float64(pods[k]-pods[k-1])
		// A falling first step (noise) extrapolates as a flat one.
		excess := values[k] - (values[k-1] + max(s1, 0)*float64(pods[k]-pods[k-1]))
		if s2 > slopeTolerance*max(s1, 0) && excess > excessTolerance*values[k] && excess > spread(k) {
			return false, fmt.Sprintf("slope %.3g a pod from %d to %d pods, %.3g from %d to %d", s1, pods[k-2], pods[k-1], s2, pods[k-1], pods[k])
		}
	}
	return true, ""
}

// printScaleGrowth prints each quantity at every size with its per-pod
// figure and growth verdict, and the stats target at 100 pods.
func printScaleGrowth(points []scalePoint) {
	pods := make([]int, len(points))
	for i, p := range points {
		pods[i] = p.pods
	}
	fmt.Printf("  growth with the number of pods %v (faster than linear: a per-pod figure rising over %.0f%% from a size to the next,\n", pods, (perPodTolerance-1)*100)
	fmt.Printf("  or the last slope over %.1f× the one before with the last value over %.0f%% above the line through the two before)\n", slopeTolerance, excessTolerance*100)
	for _, f := range scaleFigures(points) {
		var vals, per []string
		for i, v := range f.values {
			vals = append(vals, strconv.FormatFloat(v, 'g', 3, 64))
			per = append(per, strconv.FormatFloat(v/float64(pods[i]), 'g', 3, 64))
		}
		unit := f.unit
		if unit != "" {
			unit = " " + unit
		}
		verdict := "linear or better"
		if len(points) < 2 {
			verdict = "(needs two sizes or more)"
		} else if ok, why := growthVerdict(pods, f.values, f.noise); !ok {
			verdict = "FASTER THAN LINEAR: " + why
		}
		fmt.Printf("    %-50s %s%s (%s: %s): %s\n", f.name, strings.Join(vals, " / "), unit, f.perPod, strings.Join(per, " / "), verdict)
	}
	for _, p := range points {
		if p.pods != 100 {
			continue
		}
		for _, name := range []string{"ListContainerStats", "ListPodSandboxStats"} {
			m := percentile(p.latency[name], 50)
			verdict := "meets the target (< 100ms)"
			if m >= 100*time.Millisecond {
				verdict = "MISSES the target (< 100ms)"
			}
			fmt.Printf("    %s with 100 pods: median %s: %s\n", name, m, verdict)
		}
	}
}

// parseSizes parses a comma-separated list of pod counts.
func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-scale-pods %q: want pod counts such as 10,50,100", s)
		}
		if len(sizes) > 0 && n <= sizes[len(sizes)-1] {
			return nil, fmt.Errorf("-scale-pods %q: want increasing pod counts", s)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}
