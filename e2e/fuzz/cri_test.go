// Package fuzz fuzzes a real pierd with sequences of CRI calls decoded from
// the fuzzer's bytes (as containerd's FuzzCRIServer does): pierd must never
// panic or die, must answer every call with a gRPC status, and must leave
// nothing behind once the pods are removed.
//
// It is a package of its own, not part of e2e: Go runs each fuzz worker as a
// new process of the test binary, TestMain included, and e2e's TestMain
// builds and pushes a dozen images and takes the host lock, which the
// coordinating process already holds. Here the process that runs the test
// (go test, or the coordinator under -fuzz) starts one pierd for the whole
// run, and the workers reach it through the environment they inherit.
//
// Plain go test runs the seed corpus (testdata/fuzz/FuzzCRIServer); make
// fuzz-go fuzzes it. PIER_FUZZ_STRICT_CODES=1 also fails an input on an
// error with code Unknown or Internal (an error pierd did not classify).
package fuzz

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
	"github.com/pier-runtime/pier/internal/hostlock"
)

// The environment through which fuzz workers find the coordinator's pierd.
const (
	envEndpoint = "PIER_FUZZ_CRI_ENDPOINT"
	envImage    = "PIER_FUZZ_CRI_IMAGE"
	envRegistry = "PIER_FUZZ_CRI_REGISTRY"
	envDir      = "PIER_FUZZ_CRI_DIR"
	envLog      = "PIER_FUZZ_CRI_LOG"
)

const (
	cgroupParent = "/pier-fuzz"
	maxOps       = 16 // calls per input
	maxPods      = 3  // pods per input
	// An input's calls end opsBudget after it starts, its clean-up has
	// cleanupBudget, the check that pierd still answers checkBudget: Go's
	// fuzz worker gives up on an input after 10 s.
	opsBudget     = 4500 * time.Millisecond
	cleanupBudget = 3 * time.Second
	checkBudget   = time.Second
	callTimeout   = 3 * time.Second
)

// target is the pierd under test, as a fuzz input sees it.
type target struct {
	runtime  runtimeapi.RuntimeServiceClient
	images   runtimeapi.ImageServiceClient
	image    string // the busybox image's reference
	registry string // the test registry's host
	dir      string // where inputs make their log directories
	log      string // pierd's log
	strict   bool
	logSeen  atomic.Int64 // how far the log was checked for panics
	inputs   atomic.Int64
}

// FuzzCRIServer sends each input's calls (see calls and step) to the one
// pierd of the run, then removes the input's pods and checks that pierd
// still answers and logged no panic.
func FuzzCRIServer(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("the CRI fuzzer runs a real pierd: it needs root")
	}
	var tg *target
	if fuzzWorker() {
		tg = connect(f) // the coordinator's pierd
	} else {
		tg = start(f)
	}
	tg.strict = os.Getenv("PIER_FUZZ_STRICT_CODES") != ""
	f.Fuzz(func(t *testing.T, data []byte) { tg.run(t, data) })
}

// start starts pierd on a temporary root with a test registry holding
// busybox and a CNI network of its own, exports where they are for the
// fuzz workers, and, when the fuzz run ends, removes every pod and checks
// that pierd is as it was after its warm-up: no panic logged, goroutines
// and descriptors back, no mount left under its directories.
func start(f *testing.F) *target {
	dir, err := os.MkdirTemp("", "pier-fuzz-cri-")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		if m := mountsUnder(dir); len(m) > 0 {
			f.Errorf("%s left in place: mounts under it:\n%s", dir, strings.Join(m, "\n"))
			return
		}
		os.RemoveAll(dir)
	})
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		f.Fatal(err)
	}
	// PIER_E2E_RACE=1, as for e2e: pierd and pier-shim with the race detector.
	pierdBin, err := testenv.BuildPier("../..", bin, os.Getenv("PIER_E2E_RACE") != "")
	if err != nil {
		f.Fatal(err)
	}
	unlock, err := hostlock.Lock()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(unlock)
	reg, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { reg.Close() })
	img, err := testenv.Busybox()
	if err != nil {
		f.Fatal(err)
	}
	if _, err := reg.Push("fuzz/busybox:1", img); err != nil {
		f.Fatal(err)
	}
	network, err := testenv.NewNetwork(filepath.Join(dir, "cni"), "pierfuzz0", "10.96.0.0/16")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		if err := network.Close(); err != nil {
			f.Errorf("remove the test network: %v", err)
		}
	})
	pdir := filepath.Join(dir, "pierd")
	if err := os.Mkdir(pdir, 0o755); err != nil {
		f.Fatal(err)
	}
	p, err := testenv.StartPierd(testenv.PierdOptions{Binary: pierdBin, Dir: pdir,
		Config: "[metrics]\naddress = \"127.0.0.1:0\"\n" + network.Config()})
	if err != nil {
		f.Fatal(err)
	}
	tg := &target{runtime: p.Runtime, images: p.Images, image: reg.Ref("fuzz/busybox:1"),
		registry: reg.Host(), dir: filepath.Join(dir, "logs"), log: p.Log}
	if err := os.Mkdir(tg.dir, 0o755); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		if err := testenv.RemoveCgroupTree(cgroupParent); err != nil {
			f.Errorf("remove the pods' cgroup parent: %v", err)
		}
	})
	f.Cleanup(func() {
		if f.Failed() {
			f.Logf("pierd log (last 64 KiB):\n%s", tail(p.Log, 64<<10))
		}
	})
	f.Cleanup(func() {
		if err := p.Stop(); err != nil {
			f.Errorf("stop pierd: %v", err)
		}
	})

	// Warm up (what pierd starts once: the streaming server, the CNI
	// cache...) with one pod and container, then take the baseline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.Images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: tg.image}}); err != nil {
		f.Fatalf("pull %s: %v", tg.image, err)
	}
	tg.warmUp(f)
	metrics := metricsURL(f, p.LogText())
	before := leakFigures(f, metrics, p.Pid())
	f.Cleanup(func() {
		if err := p.RemovePods(); err != nil {
			f.Errorf("remove the pods left: %v", err)
		}
		for _, bad := range []string{"Panic in CRI handler", "panic:", "WARNING: DATA RACE"} {
			if strings.Contains(p.LogText(), bad) {
				f.Errorf("pierd logged %q", bad)
			}
		}
		if u := unclassified(p.LogText()); len(u) > 0 {
			f.Logf("errors pierd did not classify (code Unknown or Internal), by method and message:\n%s", strings.Join(u, "\n"))
		}
		// Goroutines end a little after their pods (a shim's connection
		// closing): poll for a while.
		var after figures
		for range 50 {
			if after = leakFigures(f, metrics, p.Pid()); after.goroutines <= before.goroutines+10 && after.fds <= before.fds+5 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		f.Logf("pierd after %d CRI requests: goroutines %d (after warm-up %d), fds %d (%d)",
			after.requests-before.requests, after.goroutines, before.goroutines, after.fds, before.fds)
		if after.goroutines > before.goroutines+10 || after.fds > before.fds+5 {
			f.Errorf("pierd leaks: goroutines %d → %d, fds %d → %d", before.goroutines, after.goroutines, before.fds, after.fds)
		}
		if procs := processesUnder(pdir, p.Pid()); len(procs) > 0 {
			f.Errorf("processes left (shims, monitors, containers' runtimes):\n%s", strings.Join(procs, "\n"))
		}
		if m := mountsUnder(dir); len(m) > 0 {
			f.Errorf("mounts left under pierd's directories:\n%s", strings.Join(m, "\n"))
		}
		if n := network.Allocations(); n != 0 {
			f.Errorf("%d pod IPs still allocated", n)
		}
	})
	for k, v := range map[string]string{envEndpoint: p.Endpoint(), envImage: tg.image, envRegistry: tg.registry, envDir: tg.dir, envLog: tg.log} {
		os.Setenv(k, v)
		f.Cleanup(func() { os.Unsetenv(k) })
	}
	return tg
}

// fuzzWorker tells whether this process is one of the fuzz workers that
// go test -fuzz starts.
func fuzzWorker() bool {
	fl := flag.Lookup("test.fuzzworker")
	return fl != nil && fl.Value.String() == "true"
}

// connect is a fuzz worker's target: the pierd its coordinator started.
func connect(f *testing.F) *target {
	conn, err := grpc.NewClient(os.Getenv(envEndpoint), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { conn.Close() })
	return &target{runtime: runtimeapi.NewRuntimeServiceClient(conn), images: runtimeapi.NewImageServiceClient(conn),
		image: os.Getenv(envImage), registry: os.Getenv(envRegistry), dir: os.Getenv(envDir), log: os.Getenv(envLog)}
}

// warmUp runs one pod with a container, an exec and the removal.
func (tg *target) warmUp(f *testing.F) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pod := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "warmup", Namespace: "fuzz", Uid: "warmup"},
		LogDirectory: tg.dir,
		Linux:        &runtimeapi.LinuxPodSandboxConfig{CgroupParent: cgroupParent},
	}
	run, err := tg.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: pod})
	if err != nil {
		f.Fatalf("warm-up pod: %v", err)
	}
	defer tg.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: run.PodSandboxId})
	c, err := tg.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: run.PodSandboxId, SandboxConfig: pod,
		Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Image: &runtimeapi.ImageSpec{Image: tg.image},
			Command: []string{"sleep", "1000"}, LogPath: "warmup.log"}})
	if err == nil {
		_, err = tg.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId})
	}
	if err == nil {
		_, err = tg.runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: c.ContainerId, Cmd: []string{"true"}, Timeout: 5})
	}
	if err != nil {
		f.Fatalf("warm-up container: %v", err)
	}
}

// run decodes and sends one input's calls, then removes the pods it made
// and checks that pierd still answers.
func (tg *target) run(t *testing.T, data []byte) {
	tg.inputs.Add(1)
	logDir, err := os.MkdirTemp(tg.dir, "in-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(logDir)
	s := &sequence{t: t, tg: tg, in: &input{data: data}, logDir: logDir,
		uid: fmt.Sprintf("%d-%d", os.Getpid(), tg.inputs.Load()), deadline: time.Now().Add(opsBudget)}
	s.ensureImage()
	for n := 0; n < maxOps && !s.in.done() && time.Now().Before(s.deadline); n++ {
		s.step()
	}
	s.cleanup()
	ctx, cancel := context.WithTimeout(context.Background(), checkBudget)
	defer cancel()
	if _, err := tg.runtime.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		t.Fatalf("pierd no longer answers Version: %v\n%s", err, tail(tg.log, 8<<10))
	}
	tg.checkLog(t)
}

// checkLog fails on a panic pierd logged since the last check.
func (tg *target) checkLog(t *testing.T) {
	f, err := os.Open(tg.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	from := tg.logSeen.Load()
	b, err := io.ReadAll(io.NewSectionReader(f, from, 1<<40))
	if err != nil {
		t.Fatal(err)
	}
	tg.logSeen.Store(from + int64(len(b)))
	if i := bytes.Index(b, []byte("Panic in CRI handler")); i >= 0 {
		t.Fatalf("pierd logged a panic:\n%s", b[i:min(len(b), i+8<<10)])
	}
	if i := bytes.Index(b, []byte("panic:")); i >= 0 {
		t.Fatalf("pierd logged a panic:\n%s", b[max(0, i-2<<10):min(len(b), i+8<<10)])
	}
}

var failedRE = regexp.MustCompile(`"CRI request failed" id=\d+ method="([^"]+)" code="(Unknown|Internal)" err="(.*)" duration=`)

// unclassified lists the failed requests pierd answered with Unknown or
// Internal, once per method and message (IDs and numbers masked).
func unclassified(log string) []string {
	digits := regexp.MustCompile(`[0-9a-f]{12,}|[0-9]+`)
	seen := map[string]bool{}
	var out []string
	for _, m := range failedRE.FindAllStringSubmatch(log, -1) {
		line := m[1] + " " + m[2] + ": " + digits.ReplaceAllString(m[3], "N")
		if !seen[line] {
			seen[line] = true
			out = append(out, line)
		}
	}
	return out
}

// figures are what a leak shows in.
type figures struct{ goroutines, fds, requests int }

func leakFigures(f *testing.F, metrics string, pid int) figures {
	var fig figures
	resp, err := http.Get(metrics)
	if err != nil {
		f.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			fig.goroutines, _ = strconv.Atoi(v)
		}
		if strings.HasPrefix(line, "pier_cri_requests_total{") {
			n, _ := strconv.Atoi(line[strings.LastIndexByte(line, ' ')+1:])
			fig.requests += n
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		f.Fatal(err)
	}
	fig.fds = len(fds)
	return fig
}

// metricsURL is the /metrics URL pierd logged.
func metricsURL(f *testing.F, log string) string {
	m := regexp.MustCompile(`"Serving metrics" address="(http://127\.0\.0\.1:[0-9]+/metrics)"`).FindStringSubmatch(log)
	if m == nil {
		f.Fatalf("pierd did not log its metrics address:\n%s", log)
	}
	return m[1]
}

// processesUnder lists the processes but pierd whose command line names
// a path under dir: a shim or monitor runs on its directory there.
func processesUnder(dir string, pierd int) []string {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var out []string
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if err == nil && pid != pierd && bytes.Contains(b, []byte(dir)) {
			out = append(out, fmt.Sprintf("%d %s", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		}
	}
	return out
}

// mountsUnder lists the mount points under dir.
func mountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if fields := strings.Fields(line); len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			out = append(out, fields[4])
		}
	}
	return out
}

// tail is the last n bytes of a file.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, max(0, st.Size()-n), n))
	return string(b)
}

// sequence is one input's calls and the objects they made.
type sequence struct {
	t          *testing.T
	tg         *target
	in         *input
	logDir     string
	uid        string
	deadline   time.Time // of the calls
	timedOut   []*runtimeapi.PodSandboxMetadata
	pods       []*pod
	containers []string
}

type pod struct {
	id     string
	config *runtimeapi.PodSandboxConfig
}

// ensureImage pulls busybox again if an earlier input removed it.
func (s *sequence) ensureImage() {
	ctx, cancel := s.ctx()
	defer cancel()
	st, err := s.tg.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: s.tg.image}})
	if err == nil && st.Image != nil {
		return
	}
	_, err = s.tg.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: s.tg.image}})
	if err != nil && status.Code(err) != codes.DeadlineExceeded {
		s.t.Fatalf("pull %s: %v", s.tg.image, err)
	}
}

// check fails the input on an error that is no gRPC status, or is a
// panic pierd recovered from; in strict mode also on Unknown and Internal.
func (s *sequence) check(method string, err error) {
	s.t.Logf("%s: %v", method, err)
	if err == nil {
		return
	}
	st, ok := status.FromError(err)
	if !ok {
		s.t.Fatalf("%s: not a gRPC status: %v", method, err)
	}
	switch st.Code() {
	case codes.Internal:
		if strings.HasPrefix(st.Message(), "internal error in ") {
			s.t.Fatalf("%s: pierd panicked: %v", method, err)
		}
		fallthrough
	case codes.Unknown:
		if s.tg.strict {
			s.t.Errorf("%s: unclassified error: %v", method, err)
		}
	}
}

// ctx bounds a call by callTimeout and the input's deadline.
func (s *sequence) ctx() (context.Context, context.CancelFunc) {
	d := time.Now().Add(callTimeout)
	if s.deadline.Before(d) {
		d = s.deadline
	}
	return context.WithDeadline(context.Background(), d)
}

// podID is one of the input's pods, a prefix of one, or a fuzzed string.
func (s *sequence) podID() string {
	var ids []string
	for _, p := range s.pods {
		ids = append(ids, p.id)
	}
	return s.id(ids)
}

func (s *sequence) containerID() string { return s.id(s.containers) }

func (s *sequence) id(ids []string) string {
	b := s.in.byte()
	switch {
	case len(ids) == 0 || b%8 == 7:
		return s.in.string()
	case b%8 == 6:
		id := ids[int(b>>3)%len(ids)]
		return id[:min(len(id), s.in.n(len(id)+1))]
	default:
		return ids[int(b>>3)%len(ids)]
	}
}

// podOf is the config of the input's pod id, or a fuzzed choice.
func (s *sequence) podOf(id string) *runtimeapi.PodSandboxConfig {
	for _, p := range s.pods {
		if p.id == id {
			return p.config
		}
	}
	return nil
}

// The calls. Each reads its fields from the input.
var calls = []func(*sequence){
	(*sequence).runPodSandbox, (*sequence).createContainer, (*sequence).startContainer,
	(*sequence).stopContainer, (*sequence).removeContainer, (*sequence).stopPodSandbox,
	(*sequence).removePodSandbox, (*sequence).execSync, (*sequence).containerStatus,
	(*sequence).podSandboxStatus, (*sequence).listContainers, (*sequence).listPodSandbox,
	(*sequence).imageCalls, (*sequence).status, (*sequence).updateContainerResources,
	(*sequence).reopenContainerLog, (*sequence).stats, (*sequence).streaming,
	(*sequence).createAndStart,
}

// step decodes one call: its number, then the length of its fields and
// the fields (missing bytes read as zero, the usual value): a mutation
// then changes one call, and a seed is easy to write by hand.
func (s *sequence) step() {
	call := calls[s.in.n(len(calls))]
	outer := s.in
	s.in = &input{data: outer.take(int(outer.byte()))}
	call(s)
	s.in = outer
}

func (s *sequence) podConfig() *runtimeapi.PodSandboxConfig {
	in := s.in
	if in.n(16) == 15 {
		return nil
	}
	network := runtimeapi.NamespaceMode_NODE // cheaper: no CNI
	if in.n(4) == 3 {
		network = runtimeapi.NamespaceMode_POD
	}
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: in.pick("fuzz", "web-0"), Namespace: in.pick("fuzz"),
			Uid: in.pick(s.uid + "-" + strconv.Itoa(len(s.pods))), Attempt: in.uint32() % 3},
		Hostname:     in.pick("", "fuzz"),
		LogDirectory: s.logDir,
		Labels:       in.stringMap(2),
		Annotations:  in.stringMap(2),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: cgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: network,
					Pid: runtimeapi.NamespaceMode(in.n(3)), Ipc: runtimeapi.NamespaceMode(in.n(3))},
				ReadonlyRootfs: in.bool(),
			},
		},
	}
	if in.n(4) == 3 {
		cfg.Linux.CgroupParent = cgroupParent + "/" + in.name()
	}
	if in.n(4) == 3 {
		cfg.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: int64(in.uint32())}
	}
	if in.n(4) == 3 {
		cfg.DnsConfig = &runtimeapi.DNSConfig{Servers: in.strings(2), Searches: in.strings(2), Options: in.strings(2)}
	}
	if network == runtimeapi.NamespaceMode_POD && in.n(4) == 3 {
		// Namespaced sysctls only (pierd must refuse those of namespaces
		// the pod shares: kernel.msgmax with the host's IPC), or names
		// that exist nowhere: a pierd that failed to check must not
		// change this host's kernel.
		key := in.pick("net.core.somaxconn", "kernel.shmmax", "kernel.msgmax", "net.ipv4.ip_unprivileged_port_start")
		if !slices.Contains([]string{"net.core.somaxconn", "kernel.shmmax", "kernel.msgmax", "net.ipv4.ip_unprivileged_port_start"}, key) {
			key = "net.nosuch." + key
		}
		cfg.Linux.Sysctls = map[string]string{key: in.pick("1024")}
	}
	return cfg
}

func (s *sequence) runPodSandbox() {
	if len(s.pods) >= maxPods {
		return
	}
	cfg := s.podConfig()
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.tg.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg,
		RuntimeHandler: s.in.pick("", "", "runc", "crun")})
	s.check("RunPodSandbox", err)
	if err == nil {
		s.pods = append(s.pods, &pod{id: resp.PodSandboxId, config: cfg})
	} else if status.Code(err) == codes.DeadlineExceeded && cfg != nil && cfg.Metadata != nil {
		// It may still have run: the clean-up looks for it.
		s.timedOut = append(s.timedOut, cfg.Metadata)
	}
}

// adopt adds the pods that RunPodSandbox calls which timed out made.
func (s *sequence) adopt(ctx context.Context) {
	if len(s.timedOut) == 0 {
		return
	}
	list, err := s.tg.runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return // left to the end of the run
	}
	for _, p := range list.Items {
		for _, md := range s.timedOut {
			if p.Metadata.GetUid() == md.Uid && p.Metadata.GetName() == md.Name && p.Metadata.GetNamespace() == md.Namespace {
				s.pods = append(s.pods, &pod{id: p.Id})
			}
		}
	}
}

// command is what a container or an exec runs (the image is busybox):
// first sleep for a container, true for an exec.
func (s *sequence) command(first int) []string {
	in := s.in
	switch (in.n(7) + first) % 7 {
	case 0:
		return []string{"sleep", "1000"}
	case 1:
		return []string{"true"}
	case 2:
		return []string{"sh", "-c", "exit " + strconv.Itoa(in.n(256))}
	case 3:
		return []string{"echo", in.string()}
	case 4:
		return []string{"sh", "-c", "echo out; echo err >&2; sleep 1"}
	case 5:
		return nil
	default:
		// Fuzzed arguments, but only to harmless programs, or to one that
		// does not exist: the container may be privileged and share the
		// host's PID namespace.
		prog := in.pick("echo", "ls", "sleep")
		if !slices.Contains([]string{"echo", "ls", "sleep"}, prog) {
			prog = "/nonexistent/" + prog
		}
		return append([]string{prog}, in.strings(2)...)
	}
}

func (s *sequence) resources() *runtimeapi.LinuxContainerResources {
	in := s.in
	if in.n(4) == 0 {
		return nil
	}
	r := &runtimeapi.LinuxContainerResources{}
	if in.bool() {
		r.CpuShares = int64(in.uint32() % 4096)
		r.CpuQuota = int64(in.uint32()%200000) - 1
		r.CpuPeriod = int64(in.uint32() % 1000000)
	}
	if in.bool() {
		r.MemoryLimitInBytes = in.int64()
	}
	if in.bool() {
		r.OomScoreAdj = int64(int16(in.uint32()))
	}
	if in.bool() {
		r.CpusetCpus = in.pick("0", "0-1", "")
		r.CpusetMems = in.pick("0", "")
	}
	if in.bool() {
		r.Unified = in.stringMap(1)
	}
	return r
}

func (s *sequence) containerConfig() *runtimeapi.ContainerConfig {
	in := s.in
	if in.n(16) == 15 {
		return nil
	}
	cfg := &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: in.pick("c", "d"), Attempt: in.uint32() % 3},
		Image:       &runtimeapi.ImageSpec{Image: in.pick(s.tg.image, s.tg.image, "")},
		Command:     s.command(0),
		Args:        in.strings(2), // dropped below when there is no command
		WorkingDir:  in.pick("", "/", "/tmp"),
		LogPath:     in.pick("c.log", ""),
		Labels:      in.stringMap(2),
		Annotations: in.stringMap(2),
		Stdin:       in.bool(),
		StdinOnce:   in.bool(),
		Tty:         in.bool(),
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: s.resources(),
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Privileged:     in.n(8) == 7,
				ReadonlyRootfs: in.bool(),
				NoNewPrivs:     in.bool(),
				RunAsUsername:  in.pick("", "", "root", "nobody"),
			},
		},
	}
	if cfg.Command == nil {
		// The arguments would be the program (the image has no entry
		// point): see command.
		cfg.Args = nil
	}
	if in.n(4) == 3 {
		cfg.LogPath = in.name()
	}
	for k, v := range in.stringMap(2) {
		cfg.Envs = append(cfg.Envs, &runtimeapi.KeyValue{Key: k, Value: []byte(v)})
	}
	sc := cfg.Linux.SecurityContext
	if in.n(4) == 3 {
		sc.RunAsUser = &runtimeapi.Int64Value{Value: int64(in.uint32())}
	}
	if in.n(4) == 3 {
		sc.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{in.pick("NET_ADMIN", "ALL", "CAP_SYS_TIME")},
			DropCapabilities: []string{in.pick("ALL", "CHOWN")}}
	}
	if in.n(4) == 3 {
		sc.MaskedPaths, sc.ReadonlyPaths = in.strings(2), in.strings(2)
	}
	if in.n(4) == 3 {
		// A volume from the input's own directory, to a fuzzed path.
		host := filepath.Join(s.logDir, "vol")
		os.MkdirAll(host, 0o755)
		cfg.Mounts = []*runtimeapi.Mount{{HostPath: host, ContainerPath: in.pick("/data", "/etc/hosts", "/"),
			Readonly: in.bool(), Propagation: runtimeapi.MountPropagation(in.n(2))}}
	}
	return cfg
}

func (s *sequence) createContainer() { s.create() }

// create makes a container and returns its ID, "" when it failed.
func (s *sequence) create() string {
	if len(s.containers) >= 2*maxPods {
		return ""
	}
	podID := s.podID()
	sandbox := s.podOf(podID)
	if s.in.n(8) == 7 {
		sandbox = s.podConfig()
	}
	cfg := s.containerConfig()
	ctx, cancel := s.ctx()
	defer cancel()
	resp, err := s.tg.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: sandbox})
	s.check("CreateContainer", err)
	if err != nil {
		return ""
	}
	s.containers = append(s.containers, resp.ContainerId)
	return resp.ContainerId
}

func (s *sequence) createAndStart() {
	if id := s.create(); id != "" {
		s.start(id)
	}
}

func (s *sequence) startContainer() { s.start(s.containerID()) }

func (s *sequence) start(id string) {
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id})
	s.check("StartContainer", err)
}

func (s *sequence) stopContainer() {
	id, timeout := s.containerID(), int64(s.in.n(3))
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: timeout})
	s.check("StopContainer", err)
}

func (s *sequence) removeContainer() {
	id := s.containerID()
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id})
	s.check("RemoveContainer", err)
}

func (s *sequence) stopPodSandbox() {
	id := s.podID()
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id})
	s.check("StopPodSandbox", err)
}

func (s *sequence) removePodSandbox() {
	id := s.podID()
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
	s.check("RemovePodSandbox", err)
}

func (s *sequence) execSync() {
	id, cmd, timeout := s.containerID(), s.command(1), int64(s.in.n(3))
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: timeout})
	s.check("ExecSync", err)
}

func (s *sequence) containerStatus() {
	id, verbose := s.containerID(), s.in.bool()
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: verbose})
	s.check("ContainerStatus", err)
}

func (s *sequence) podSandboxStatus() {
	id, verbose := s.podID(), s.in.bool()
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: verbose})
	s.check("PodSandboxStatus", err)
}

func (s *sequence) listContainers() {
	var filter *runtimeapi.ContainerFilter
	if s.in.bool() {
		filter = &runtimeapi.ContainerFilter{Id: s.containerID(), PodSandboxId: s.podID(), LabelSelector: s.in.stringMap(2)}
		if s.in.bool() {
			filter.State = &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState(s.in.n(5))}
		}
	}
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: filter})
	s.check("ListContainers", err)
}

func (s *sequence) listPodSandbox() {
	var filter *runtimeapi.PodSandboxFilter
	if s.in.bool() {
		filter = &runtimeapi.PodSandboxFilter{Id: s.podID(), LabelSelector: s.in.stringMap(2)}
		if s.in.bool() {
			filter.State = &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState(s.in.n(3))}
		}
	}
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: filter})
	s.check("ListPodSandbox", err)
}

// imageCalls: ImageStatus, RemoveImage, ListImages, ImageFsInfo and
// PullImage, of busybox or a fuzzed reference. A pull always goes to the
// test registry on loopback: the fuzzed part is the path.
func (s *sequence) imageCalls() {
	in := s.in
	op, ref := in.n(5), in.pick("busybox", "", s.tg.image)
	ctx, cancel := s.ctx()
	defer cancel()
	var err error
	switch op {
	case 0:
		_, err = s.tg.images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Verbose: in.bool()})
		s.check("ImageStatus", err)
	case 1:
		_, err = s.tg.images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		s.check("RemoveImage", err)
	case 2:
		_, err = s.tg.images.ListImages(ctx, &runtimeapi.ListImagesRequest{Filter: &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: ref}}})
		s.check("ListImages", err)
	case 3:
		_, err = s.tg.images.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{})
		s.check("ImageFsInfo", err)
	default:
		_, err = s.tg.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: s.tg.registry + "/" + in.pick("fuzz/busybox:1")}})
		s.check("PullImage", err)
	}
}

func (s *sequence) status() {
	verbose, which := s.in.bool(), s.in.n(4)
	ctx, cancel := s.ctx()
	defer cancel()
	var err error
	switch which {
	case 0:
		_, err = s.tg.runtime.Status(ctx, &runtimeapi.StatusRequest{Verbose: verbose})
		s.check("Status", err)
	case 1:
		_, err = s.tg.runtime.Version(ctx, &runtimeapi.VersionRequest{Version: s.in.string()})
		s.check("Version", err)
	case 2:
		_, err = s.tg.runtime.RuntimeConfig(ctx, &runtimeapi.RuntimeConfigRequest{})
		s.check("RuntimeConfig", err)
	default:
		_, err = s.tg.runtime.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
		s.check("ListMetricDescriptors", err)
	}
}

func (s *sequence) updateContainerResources() {
	id, r := s.containerID(), s.resources()
	annotations := s.in.stringMap(1)
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.UpdateContainerResources(ctx, &runtimeapi.UpdateContainerResourcesRequest{ContainerId: id, Linux: r, Annotations: annotations})
	s.check("UpdateContainerResources", err)
}

func (s *sequence) reopenContainerLog() {
	id := s.containerID()
	ctx, cancel := s.ctx()
	defer cancel()
	_, err := s.tg.runtime.ReopenContainerLog(ctx, &runtimeapi.ReopenContainerLogRequest{ContainerId: id})
	s.check("ReopenContainerLog", err)
}

func (s *sequence) stats() {
	which := s.in.n(5)
	ctx, cancel := s.ctx()
	defer cancel()
	var err error
	switch which {
	case 0:
		_, err = s.tg.runtime.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: s.containerID()})
		s.check("ContainerStats", err)
	case 1:
		_, err = s.tg.runtime.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{Id: s.containerID(), PodSandboxId: s.podID()}})
		s.check("ListContainerStats", err)
	case 2:
		_, err = s.tg.runtime.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: s.podID()})
		s.check("PodSandboxStats", err)
	case 3:
		_, err = s.tg.runtime.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
		s.check("ListPodSandboxStats", err)
	default:
		_, err = s.tg.runtime.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
		s.check("ListPodSandboxMetrics", err)
	}
}

// streaming asks for Exec, Attach and PortForward URLs (without using them).
func (s *sequence) streaming() {
	in := s.in
	ctx, cancel := s.ctx()
	defer cancel()
	var err error
	switch in.n(3) {
	case 0:
		_, err = s.tg.runtime.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: s.containerID(), Cmd: s.command(1),
			Tty: in.bool(), Stdin: in.bool(), Stdout: in.bool(), Stderr: in.bool()})
		s.check("Exec", err)
	case 1:
		_, err = s.tg.runtime.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: s.containerID(),
			Tty: in.bool(), Stdin: in.bool(), Stdout: in.bool(), Stderr: in.bool()})
		s.check("Attach", err)
	default:
		_, err = s.tg.runtime.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: s.podID(), Port: []int32{int32(in.uint32())}})
		s.check("PortForward", err)
	}
}

// cleanup removes the input's pods (and so their containers): an error
// here, or a container of a removed pod still listed, is a failure. A
// removal that runs out of time (a loaded machine) is left to the end of
// the run, whose removal of every pod must succeed.
func (s *sequence) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupBudget)
	defer cancel()
	s.adopt(ctx)
	removed := map[string]bool{}
	for _, p := range s.pods {
		_, err := s.tg.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.id})
		switch status.Code(err) {
		case codes.OK, codes.NotFound:
			removed[p.id] = true
		case codes.DeadlineExceeded:
			s.t.Logf("remove pod %s: %v: left to the end of the run", p.id, err)
		default:
			s.t.Fatalf("remove pod %s: %v", p.id, err)
		}
	}
	if len(removed) == 0 {
		return
	}
	list, err := s.tg.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if status.Code(err) == codes.DeadlineExceeded {
		return
	}
	if err != nil {
		s.t.Fatalf("ListContainers: %v", err)
	}
	for _, c := range list.Containers {
		if removed[c.PodSandboxId] {
			s.t.Fatalf("container %s of removed pod %s still listed", c.Id, c.PodSandboxId)
		}
	}
}
