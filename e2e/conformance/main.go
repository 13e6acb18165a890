// Command conformance runs the CRI validation suite (critest from cri-tools
// v1.37.0) against a real pierd, offline: critest's images are replicas
// built from busybox and served by a registry on loopback, which pier
// reaches through its registry mirror configuration.
//
// It runs critest once per variant (the default handler with SPDY streaming,
// then with WebSocket streaming, and the same with crun where pier can use
// it), prints "critest: N passed, N failed, N skipped" for each, and
// compares the passing specs with the baseline: a spec that passed before and
// fails now is a regression, and the command fails. -update adds new passes
// to the baseline.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
	"github.com/pier-runtime/pier/internal/hostlock"
)

// variant is one critest run.
type variant struct {
	name    string // key in the baseline
	handler string // runtime handler, "" for the default (runc)
	args    []string
}

var websocket = []string{"-websocket-exec", "-websocket-attach", "-websocket-portforward"}

var variants = []variant{
	{name: "runc"},
	{name: "runc-websocket", args: websocket},
	{name: "crun", handler: "crun"},
	{name: "crun-websocket", handler: "crun", args: websocket},
}

type options struct {
	critest, pierd, baseline, out string
	conformance                   string
	parallel                      int
	update                        bool
	only                          string
	extra                         []string
}

func main() {
	var o options
	flag.StringVar(&o.critest, "critest", "bin/critest", "critest binary (go test -c of sigs.k8s.io/cri-tools/cmd/critest)")
	flag.StringVar(&o.pierd, "pierd", "bin/pierd", "pierd binary")
	flag.StringVar(&o.baseline, "baseline", "e2e/conformance-baseline.txt", "passing specs per variant (the ratchet)")
	flag.StringVar(&o.conformance, "conformance-md", "e2e/CONFORMANCE.md", "the list of specs that do not pass, written with -update")
	flag.StringVar(&o.out, "out", "_output/conformance", "directory for logs and reports")
	flag.IntVar(&o.parallel, "parallel", 1, "ginkgo nodes per critest run (needs ginkgo in PATH when > 1)")
	flag.BoolVar(&o.update, "update", false, "add new passes to the baseline")
	flag.StringVar(&o.only, "variants", "", "comma-separated variants to run (default: all)")
	flag.Parse()
	o.extra = flag.Args()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	reg, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		return err
	}
	defer reg.Close()
	start := time.Now()
	if err := testenv.PushCritestImages(reg); err != nil {
		return err
	}
	fmt.Printf("conformance: critest images pushed to %s in %.1fs\n", reg.Host(), time.Since(start).Seconds())

	dir, err := os.MkdirTemp("", "pier-critest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// pierd's state is in it: the containers of user-namespaced pods (runc's
	// init, as the pod's root) pass through it to their root file systems.
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}
	// critest's pods join a network of their own: pier's shipped conflist
	// on a bridge and IPAM directory that the run removes afterwards. The
	// test packages that check the host's network wait meanwhile.
	unlock, err := hostlock.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	network, err := testenv.NewNetwork(filepath.Join(dir, "cni"), "piercrit0", "10.98.0.0/16")
	if err != nil {
		return err
	}
	defer network.Close()
	var config strings.Builder
	config.WriteString(network.Config())
	// critest's NRI specs connect their plugins to this socket.
	fmt.Fprintf(&config, "[nri]\nenable = true\nsocket_path = %q\nplugin_path = %q\nplugin_config_path = %q\n",
		nriSocket(dir), filepath.Join(dir, "nri", "plugins"), filepath.Join(dir, "nri", "conf.d"))
	for _, r := range testenv.CritestRegistries {
		// mirrors_only: an image the replicas lack must not send pier to the internet.
		fmt.Fprintf(&config, "[registries.%q]\nmirrors = [\"http://%s\"]\nmirrors_only = true\n", r, reg.Host())
	}
	p, err := testenv.StartPierd(testenv.PierdOptions{Binary: o.pierd, Dir: dir, Config: config.String()})
	if err != nil {
		return err
	}
	defer func() {
		// critest leaves pods behind when a spec fails half-way.
		if err := p.RemovePods(); err != nil {
			fmt.Fprintln(os.Stderr, "conformance: removing critest's pods:", err)
		}
		p.Stop()
		copyFile(p.Log, filepath.Join(o.out, "pierd.log"))
	}()

	baseline, err := readBaseline(o.baseline)
	if err != nil {
		return err
	}
	handlers, err := runtimeHandlers(p)
	if err != nil {
		return err
	}
	var regressions []string
	updated := false
	for _, v := range variants {
		if o.only != "" && !slices.Contains(strings.Split(o.only, ","), v.name) {
			continue
		}
		fmt.Printf("\n== critest %s\n", v.name)
		if v.handler != "" && !slices.Contains(handlers, v.handler) {
			fmt.Printf("critest %s: not run: pier reports no usable %q runtime handler on this host\n", v.name, v.handler)
			continue
		}
		res, err := runCritest(o, p, v)
		if err != nil {
			return err
		}
		fmt.Printf("critest: %d passed, %d failed, %d skipped\n", len(res.passed), len(res.failed), len(res.skippedNames))
		for _, spec := range baseline[v.name] {
			if !slices.Contains(res.passed, spec) {
				regressions = append(regressions, v.name+": "+spec)
			}
		}
		if o.update && v.name == variants[0].name {
			if err := writeConformance(o.conformance, v.name, res); err != nil {
				return err
			}
		}
		var fresh []string
		for _, spec := range res.passed {
			if !slices.Contains(baseline[v.name], spec) {
				fresh = append(fresh, spec)
			}
		}
		if len(fresh) > 0 {
			fmt.Printf("critest %s: %d specs pass that the baseline does not list%s:\n", v.name, len(fresh), map[bool]string{true: " (added)", false: " (add them with -update)"}[o.update])
			for _, s := range fresh {
				fmt.Println("  +", s)
			}
			if o.update {
				baseline[v.name] = append(baseline[v.name], fresh...)
				updated = true
			}
		}
	}
	if updated {
		if err := writeBaseline(o.baseline, baseline); err != nil {
			return err
		}
	}
	if len(regressions) > 0 {
		fmt.Println("\nconformance: specs that passed before and fail now:")
		for _, r := range regressions {
			fmt.Println("  -", r)
		}
		return fmt.Errorf("%d regressions against %s (logs in %s)", len(regressions), o.baseline, o.out)
	}
	fmt.Printf("\nconformance: no regressions against %s (logs in %s)\n", o.baseline, o.out)
	return nil
}

// runtimeHandlers lists the handlers pier's Status reports.
func runtimeHandlers(p *testenv.Pierd) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := p.Runtime.Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return nil, err
	}
	var names []string
	for _, h := range st.RuntimeHandlers {
		names = append(names, h.Name)
	}
	return names, nil
}

type result struct {
	passed, failed, skippedNames []string
}

// nriSocket is where the NRI plugins of critest's specs connect to the
// pierd whose state is in dir.
func nriSocket(dir string) string { return filepath.Join(dir, "nri", "nri.sock") }

// runCritest runs one variant and reads its ginkgo JSON report.
func runCritest(o options, p *testenv.Pierd, v variant) (*result, error) {
	report, err := filepath.Abs(filepath.Join(o.out, v.name+".json"))
	if err != nil {
		return nil, err
	}
	os.Remove(report)
	args := []string{
		"-runtime-endpoint", p.Endpoint(), "-image-endpoint", p.Endpoint(),
		"-ginkgo.json-report", report, "-ginkgo.no-color",
	}
	if o.parallel > 1 { // ginkgo refuses a -parallel flag when running in-process
		args = append(args, "-parallel", fmt.Sprint(o.parallel))
	}
	if v.handler != "" {
		args = append(args, "-runtime-handler", v.handler)
	}
	args = append(args, "-nri-socket", nriSocket(p.Dir))
	args = append(append(args, v.args...), o.extra...)
	logPath := filepath.Join(o.out, v.name+".log")
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	bin, err := filepath.Abs(o.critest)
	if err != nil {
		return nil, err
	}
	// critest leaves temporary directories (podLogTest*) behind: give it
	// its own temp directory, removed afterwards.
	tmp, err := os.MkdirTemp("", "pier-critest-tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = o.out
	start := time.Now()
	runErr := cmd.Run() // fails whenever a spec fails: the report says which
	fmt.Printf("critest %s: ran in %.0fs, log %s\n", v.name, time.Since(start).Seconds(), logPath)
	res, err := readReport(report)
	if err != nil {
		return nil, fmt.Errorf("critest %s (%v): %w; see %s", v.name, runErr, err, logPath)
	}
	return res, nil
}

// readReport reads the specs of a ginkgo JSON report.
func readReport(path string) (*result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var reports []struct {
		SpecReports []struct {
			ContainerHierarchyTexts []string
			LeafNodeText            string
			LeafNodeType            string
			State                   string
		}
	}
	if err := json.Unmarshal(data, &reports); err != nil {
		return nil, err
	}
	res := &result{}
	for _, r := range reports {
		for _, s := range r.SpecReports {
			if s.LeafNodeType != "It" {
				continue
			}
			name := strings.Join(append(slices.Clone(s.ContainerHierarchyTexts), s.LeafNodeText), " ")
			switch s.State {
			case "passed":
				res.passed = append(res.passed, name)
			case "skipped", "pending":
				res.skippedNames = append(res.skippedNames, name)
			default:
				res.failed = append(res.failed, name)
			}
		}
	}
	slices.Sort(res.passed)
	slices.Sort(res.failed)
	slices.Sort(res.skippedNames)
	return res, nil
}

// The baseline has one line per passing spec: "<variant>\t<spec>".
func readBaseline(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return map[string][]string{}, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		v, spec, ok := strings.Cut(line, "\t")
		if !ok {
			return nil, fmt.Errorf("%s: bad line %q: want <variant>TAB<spec>", path, line)
		}
		b[v] = append(b[v], spec)
	}
	return b, sc.Err()
}

func writeBaseline(path string, b map[string][]string) error {
	var sb strings.Builder
	sb.WriteString("# critest specs that pass with pier, per variant: <variant>TAB<spec>.\n")
	sb.WriteString("# `make conformance` fails when one of them fails; `make conformance-update` adds new passes.\n")
	var lines []string
	for v, specs := range b {
		for _, s := range specs {
			lines = append(lines, v+"\t"+s)
		}
	}
	slices.Sort(lines)
	lines = slices.Compact(lines)
	sb.WriteString(strings.Join(lines, "\n") + "\n")
	return os.WriteFile(path, []byte(sb.String()), 0o644)
}

func copyFile(from, to string) {
	if b, err := os.ReadFile(from); err == nil {
		os.WriteFile(to, b, 0o644)
	}
}
