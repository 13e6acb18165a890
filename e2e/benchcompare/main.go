// Command benchcompare measures pier against its peers with the same
// benchmark: Debian's containerd 1.6, containerd 2.4.2 and CRI-O 1.34.0
// (got by peers.sh into -peers), and pier (-pierd). For each runtime in
// turn it starts the daemon with a private root, state directory and
// socket, a private CNI bridge network, the loopback test registries
// configured as plain-HTTP registries and a pause image (the critest
// replica, served here and pulled first), runs e2e/bench against its
// endpoint (-pid, -helpers, -registry, -json), stops it and removes
// everything it left: processes, mounts, network namespaces, cgroups,
// iptables rules and directories.
//
// It prints a Markdown table, one column per runtime and pier's ratio to
// the best peer on each row, with the machine and the date under it, and
// writes it to -out as well. A peer whose binaries are missing is left out
// with a message. It needs root, crictl, runc (/usr/sbin/runc) and the CNI
// plugins (/usr/lib/cni); `make bench-compare` gets them and the peers.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pier-runtime/pier/e2e/testenv"
)

const (
	runc   = "/usr/sbin/runc"
	cniBin = "/usr/lib/cni"
)

// runtimeDef is one runtime to measure.
type runtimeDef struct {
	key     string // for -runtimes and directory names
	title   string // the table's column
	bridge  string // its CNI bridge
	subnet  string
	helpers string // e2e/bench -helpers
	// bins are the files it needs, relative to -peers (or absolute).
	bins []string
	// cgroups are the names (globs) of the top-level cgroups it makes for
	// pods without a cgroup parent; the new ones are removed after it.
	cgroups []string
	// start writes the configuration and starts the daemon.
	start func(in *instance) error
}

// instance is a running runtime under test.
type instance struct {
	def      *runtimeDef
	dir      string // private root of everything it writes
	peers    string // -peers
	net      *testenv.Network
	socket   string
	cmd      *exec.Cmd
	pierd    *testenv.Pierd
	pause    string // the pause image's reference
	registry []string
	log      string
}

func main() {
	pierd := flag.String("pierd", "bin/pierd", "pierd binary")
	peers := flag.String("peers", "/var/cache/pier-bench/peers", "where peers.sh put the peers")
	out := flag.String("out", "", "also write the Markdown table to this file")
	only := flag.String("runtimes", "containerd-1.6,containerd-2.4.2,crio-1.34.0,pier", "runtimes to measure, comma-separated")
	benchOnly := flag.String("bench", "pull,pods,containers,streaming", "e2e/bench's -only")
	runs := flag.Int("runs", 5, "pulls per runtime (e2e/bench -runs)")
	flag.StringVar(&crioRunc, "crio-runc", runc, "the OCI runtime CRI-O runs; peers.sh's crio-1.34.0/runc-oom where pods have an infra container and root lacks CAP_SYS_RESOURCE")
	flag.Parse()
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		fmt.Fprintln(os.Stderr, "benchcompare: interrupted: stopping the runtime under test and cleaning up")
		interrupted.Lock() // held until exit: the run's own cleanup waits
		if interruptCleanup != nil {
			interruptCleanup()
		}
		if workDir != "" {
			os.RemoveAll(workDir)
		}
		os.Exit(1)
	}()
	if err := run(*pierd, *peers, *out, strings.Split(*only, ","), *benchOnly, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "benchcompare:", err)
		os.Exit(1)
	}
}

// On SIGINT or SIGTERM, interruptCleanup undoes the measurement under way
// and workDir (the benchmark's binary, logs and figures) is removed; both
// are read and set under interrupted.
var (
	interrupted      sync.Mutex
	interruptCleanup func()
	workDir          string
)

// onInterrupt sets interruptCleanup.
func onInterrupt(f func()) {
	interrupted.Lock()
	defer interrupted.Unlock()
	interruptCleanup = f
}

func run(pierd, peers, out string, only []string, benchOnly string, runs int) error {
	if os.Geteuid() != 0 {
		return errors.New("run it as root: the runtimes make namespaces, mounts and cgroups")
	}
	pierd, err := filepath.Abs(pierd)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "pier-compare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	interrupted.Lock()
	workDir = work
	interrupted.Unlock()
	bench := filepath.Join(work, "bench")
	if b, err := exec.Command("go", "build", "-o", bench, "./e2e/bench").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./e2e/bench (run this from the repository's top): %v: %s", err, b)
	}

	// The pause image, served for the whole run; the benchmark's own
	// registries are served by e2e/bench on benchAddr, named to each
	// runtime beforehand.
	reg, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		return err
	}
	defer reg.Close()
	if err := testenv.PushCritestImages(reg); err != nil {
		return fmt.Errorf("build the pause image: %w", err)
	}
	pause := reg.Ref("pause:3.10")
	benchAddr, err := freeAddr()
	if err != nil {
		return err
	}

	results := map[string]map[string]float64{}
	var measured []*runtimeDef
	for _, def := range runtimes(pierd) {
		if !slices.Contains(only, def.key) {
			continue
		}
		if missing := def.missing(peers); missing != "" {
			fmt.Printf("\n=== %s: skipped, %s is missing (make bench-compare gets it: e2e/benchcompare/peers.sh)\n", def.title, missing)
			continue
		}
		fmt.Printf("\n=== %s\n", def.title)
		figs, err := measure(def, peers, work, bench, pause, []string{reg.Host(), benchAddr}, benchOnly, runs)
		if err != nil {
			fmt.Printf("=== %s: failed: %v\n", def.title, err)
			continue
		}
		results[def.key] = figs
		measured = append(measured, def)
	}
	if len(measured) == 0 {
		return errors.New("no runtime could be measured")
	}
	table := render(measured, results, runs)
	fmt.Println()
	fmt.Print(table)
	if out != "" {
		return os.WriteFile(out, []byte(table), 0o644)
	}
	return nil
}

// missing names the first file the runtime needs that is not there.
func (d *runtimeDef) missing(peers string) string {
	for _, b := range d.bins {
		if !filepath.IsAbs(b) {
			b = filepath.Join(peers, b)
		}
		if _, err := os.Stat(b); err != nil {
			return b
		}
	}
	return ""
}

// measure starts the runtime, runs e2e/bench against it and cleans up.
func measure(def *runtimeDef, peers, work, benchBin, pause string, registries []string, benchOnly string, runs int) (map[string]float64, error) {
	dir, err := os.MkdirTemp("", "pier-compare-"+def.key+"-")
	if err != nil {
		return nil, err
	}
	in := &instance{def: def, dir: dir, peers: peers, pause: pause, registry: registries, log: filepath.Join(work, def.key+".log")}
	before := snapshot(def)
	var bench *exec.Cmd
	cleanup := func() {
		if bench != nil && bench.Process != nil {
			syscall.Kill(-bench.Process.Pid, syscall.SIGKILL)
		}
		if err := in.cleanup(before); err != nil {
			fmt.Printf("=== %s: cleanup: %v\n", def.title, err)
		}
	}
	onInterrupt(cleanup)
	defer func() {
		onInterrupt(nil)
		cleanup()
	}()
	if in.net, err = testenv.NewNetwork(filepath.Join(dir, "cni"), def.bridge, def.subnet); err != nil {
		return nil, err
	}
	if err := def.start(in); err != nil {
		return nil, fmt.Errorf("start: %w (log: %s)", err, tail(in.log))
	}
	pid := in.pid()
	if in.pierd == nil {
		// The peers run pods from the pause image: pull it first.
		if out, err := exec.Command("crictl", "--runtime-endpoint", in.endpoint(), "--image-endpoint", in.endpoint(), "pull", pause).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("crictl pull %s: %v: %s (log: %s)", pause, err, out, tail(in.log))
		}
	}
	// Let the daemon settle after its start (and the pull) before its
	// idle PSS is read.
	time.Sleep(2 * time.Second)
	figs := filepath.Join(work, def.key+".json")
	cmd := exec.Command(benchBin, "-endpoint", in.endpoint(), "-pid", strconv.Itoa(pid), "-helpers", def.helpers,
		"-registry", registries[1], "-json", figs, "-only", benchOnly, "-runs", strconv.Itoa(runs))
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its crictl calls too, on an interrupt
	// Its temporary files go with the work directory, even when it is killed.
	tmp := filepath.Join(work, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, err
	}
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	interrupted.Lock()
	err = cmd.Start()
	bench = cmd
	interrupted.Unlock()
	if err == nil {
		err = cmd.Wait()
	}
	interrupted.Lock()
	bench = nil
	interrupted.Unlock()
	if err != nil {
		return nil, fmt.Errorf("e2e/bench: %v (daemon log: %s)", err, tail(in.log))
	}
	b, err := os.ReadFile(figs)
	if err != nil {
		return nil, err
	}
	var r struct {
		Figures map[string]float64 `json:"figures"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", figs, err)
	}
	return r.Figures, nil
}

func (in *instance) endpoint() string { return "unix://" + in.socket }

func (in *instance) pid() int {
	if in.pierd != nil {
		return in.pierd.Pid()
	}
	return in.cmd.Process.Pid
}

// startDaemon starts a peer's daemon with env added to this process's and
// waits until its socket answers crictl version.
func (in *instance) startDaemon(env []string, name string, args ...string) error {
	log, err := os.Create(in.log)
	if err != nil {
		return err
	}
	defer log.Close()
	in.cmd = exec.Command(name, args...)
	in.cmd.Stdout, in.cmd.Stderr = log, log
	in.cmd.Env = append(os.Environ(), env...)
	in.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := in.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- in.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("%s exited: %v", name, err)
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := os.Stat(in.socket); err != nil {
			continue
		}
		if exec.Command("crictl", "--runtime-endpoint", in.endpoint(), "--timeout", "2s", "version").Run() == nil {
			return nil // the goroutine reaps it when it stops
		}
	}
	return fmt.Errorf("%s did not answer on %s within 60 s", name, in.socket)
}

// stopDaemon stops a peer's daemon: SIGTERM, then SIGKILL after 20 s.
func (in *instance) stopDaemon() {
	if in.cmd == nil || in.cmd.Process == nil {
		return
	}
	pid := in.cmd.Process.Pid
	syscall.Kill(pid, syscall.SIGTERM)
	for i := 0; i < 200 && alive(pid); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if alive(pid) {
		fmt.Printf("=== %s: the daemon did not stop within 20 s of SIGTERM: killed\n", in.def.title)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// alive says whether pid runs (and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// freeAddr is a free port of 127.0.0.1.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// tail is the end of a log file, for error messages.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return strings.TrimSpace(string(b))
}
