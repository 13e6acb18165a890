package cni

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/internal/hostlock"
	"github.com/pier-runtime/pier/internal/proc"
)

// TestMain keeps the e2e tests, which change the host's network too, from
// running at the same time.
func TestMain(m *testing.M) {
	unlock, err := hostlock.Lock()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	unlock()
	os.Exit(code)
}

// writeFile writes content to dir/name and sets its times to an hour ago,
// so that the configuration cache may keep what it read.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	age(t, p)
	return p
}

func age(t testing.TB, path string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
}

func TestConfigSelection(t *testing.T) {
	dir := t.TempDir()
	bin := t.TempDir()
	writeFile(t, bin, "bridge", "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(bin, "bridge"), 0o755); err != nil {
		t.Fatal(err)
	}
	m := New(Options{ConfDir: dir, PluginDirs: []string{bin}, CacheDir: t.TempDir()})

	err := m.Ready()
	if !errors.Is(err, ErrNoConfig) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "deploy/cni/10-pier.conflist") {
		t.Fatalf("Ready with empty dir = %v", err)
	}
	if err := New(Options{ConfDir: filepath.Join(dir, "missing")}).Ready(); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("Ready with missing dir = %v", err)
	}

	writeFile(t, dir, "20-list.conflist", `{"cniVersion":"1.0.0","name":"list","plugins":[{"type":"bridge"},{"type":"portmap"}]}`)
	writeFile(t, dir, "10-single.conf", `{"cniVersion":"0.4.0","name":"single","type":"bridge","bridge":"x0"}`)
	writeFile(t, dir, "00-notes.txt", `not a config`)
	if err := os.Mkdir(filepath.Join(dir, "01-dir.conflist"), 0o755); err != nil {
		t.Fatal(err)
	}
	age(t, dir)

	list, err := m.conf.get(dir)
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != "single" || list.CNIVersion != "0.4.0" || len(list.Plugins) != 1 || list.Plugins[0].Network.Type != "bridge" {
		t.Fatalf("picked %s %s %d plugins, want the .conf wrapped into a list", list.Name, list.CNIVersion, len(list.Plugins))
	}
	if again, _ := m.conf.get(dir); again != list {
		t.Error("unchanged dir was read again")
	}
	if err := m.Ready(); err != nil {
		t.Fatalf("Ready = %v", err)
	}

	// A .json file sorts first; the dir's mtime changes, so the cache notices.
	writeFile(t, dir, "05-first.json", `{"cniVersion":"1.0.0","name":"first","type":"bridge"}`)
	if list, _ := m.conf.get(dir); list == nil || list.Name != "first" {
		t.Fatalf("after adding 05-first.json picked %v", list)
	}
	if err := os.Remove(filepath.Join(dir, "05-first.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "10-single.conf")); err != nil {
		t.Fatal(err)
	}
	if list, _ := m.conf.get(dir); list == nil || list.Name != "list" || len(list.Plugins) != 2 {
		t.Fatalf("after removals picked %v", list)
	}
	err = m.Ready()
	if err == nil || !strings.Contains(err.Error(), `plugin "portmap" not found`) {
		t.Fatalf("Ready with portmap missing = %v", err)
	}

	// A broken first file is reported, not skipped.
	writeFile(t, dir, "15-broken.conflist", `{"name":`)
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), "15-broken.conflist") {
		t.Fatalf("Ready with broken config = %v", err)
	}
}

func TestShippedConfig(t *testing.T) {
	list, err := loadFile("../deploy/cni/10-pier.conflist")
	if err != nil {
		t.Fatal(err)
	}
	if list.Name != "pier" || list.CNIVersion != "1.0.0" || len(list.Plugins) != 2 ||
		list.Plugins[0].Network.Type != "bridge" || !list.Plugins[1].Network.Capabilities["portMappings"] {
		t.Errorf("unexpected shipped config: %s", list.Bytes)
	}
}

func TestRuntimeConf(t *testing.T) {
	rt := runtimeConf(Pod{ID: "abc", Name: "web", Namespace: "default", UID: "u1", NetNS: "/run/x",
		PortMappings: []PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "TCP"}, {ContainerPort: 53, Protocol: "UDP"}}})
	want := fmt.Sprint([][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "web"}, {"K8S_POD_INFRA_CONTAINER_ID", "abc"}, {"K8S_POD_UID", "u1"}})
	if got := fmt.Sprint(rt.Args); got != want {
		t.Errorf("args %s, want %s", got, want)
	}
	ports := rt.CapabilityArgs["portMappings"].([]portMapEntry)
	if len(ports) != 1 || ports[0] != (portMapEntry{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}) {
		t.Errorf("port mappings %+v", ports)
	}
	if rt := runtimeConf(Pod{ID: "abc"}); rt.CapabilityArgs != nil {
		t.Errorf("capability args without ports: %v", rt.CapabilityArgs)
	}
}

// Root tests below attach real network namespaces to a test bridge with
// Debian's plugins. Each cleans up all it creates and checks that it did.

const (
	testBridge = "piertest0"
	testNet    = "piertest"
	testSubnet = "10.99.0.0/24"
)

type env struct {
	t       testing.TB
	confDir string
	binDir  string // extra plugin dir, searched first
	opts    Options
	ipamDir string // host-local's data for the test network
	m       *Manager
}

type confOpts struct {
	noMasq    bool
	noPortmap bool
	extra     string // a plugin appended to the list
}

func newEnv(t testing.TB, co confOpts) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Skip("needs the CNI plugins in /usr/lib/cni")
	}
	checkHostRestored(t)
	root := t.TempDir()
	e := &env{t: t, confDir: filepath.Join(root, "net.d"), binDir: filepath.Join(root, "bin")}
	for _, d := range []string{e.confDir, e.binDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.opts = Options{ConfDir: e.confDir, PluginDirs: []string{e.binDir, "/usr/lib/cni"}, CacheDir: filepath.Join(root, "cache")}
	e.ipamDir = filepath.Join(root, "ipam", testNet)
	extra := ""
	if !co.noPortmap {
		extra = `, {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}`
	}
	if co.extra != "" {
		extra += ", " + co.extra
	}
	writeFile(t, e.confDir, "10-test.conflist", fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": %q,
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": %t, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}%s
  ]
}`, testNet, testBridge, !co.noMasq, filepath.Dir(e.ipamDir), testSubnet, extra))
	e.m = New(e.opts)
	return e
}

// checkHostRestored snapshots the host's network state and registers a
// cleanup that removes what the plugins leave by design (the bridge,
// portmap's shared chains, ip_forward) and fails if anything else changed.
func checkHostRestored(t testing.TB) {
	before := hostState(t)
	forward, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", testBridge).Run()
		removeSharedChains(t, before.iptables, before.ip6tables)
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", forward, 0o644); err != nil {
			t.Error(err)
		}
		if after := hostState(t); after.summary() != before.summary() {
			t.Errorf("host not restored:\nbefore %s\nafter  %s\niptables now:\n%s", before.summary(), after.summary(), after.iptables)
		}
	})
}

type host struct {
	iptables, ip6tables string
	veths, bridge       string
}

func (h host) summary() string {
	lines := func(s string) int { return strings.Count(s, "\n") }
	return fmt.Sprintf("iptables-save %d lines, ip6tables-save %d lines, veths %q, bridge %q",
		lines(h.iptables), lines(h.ip6tables), h.veths, h.bridge)
}

func hostState(t testing.TB) host {
	out := func(name string, args ...string) string {
		b, _ := exec.Command(name, args...).Output()
		return string(b)
	}
	return host{
		iptables:  out("iptables-save"),
		ip6tables: out("ip6tables-save"),
		veths:     out("ip", "-o", "link", "show", "type", "veth"),
		bridge:    out("ip", "-o", "link", "show", testBridge),
	}
}

// removeSharedChains deletes the chains that portmap shares between pods and
// never removes, when they did not exist before, and then the tables that
// did not exist and are empty. A chain that still holds a pod's rules stays,
// for the caller's check to catch.
func removeSharedChains(t testing.TB, before, before6 string) {
	now, err := exec.Command("iptables-save", "-t", "nat").Output()
	if err != nil {
		return
	}
	fresh := func(chain string) bool {
		return strings.Contains(string(now), ":"+chain+" ") && !strings.Contains(before, ":"+chain+" ")
	}
	var script strings.Builder
	script.WriteString("*nat\n")
	sc := bufio.NewScanner(strings.NewReader(string(now)))
	for sc.Scan() {
		line := sc.Text()
		for _, c := range []string{"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"} {
			builtin := strings.HasPrefix(line, "-A PREROUTING ") || strings.HasPrefix(line, "-A OUTPUT ") || strings.HasPrefix(line, "-A POSTROUTING ")
			if fresh(c) && builtin && strings.HasSuffix(line, "-j "+c) {
				script.WriteString("-D " + line[3:] + "\n")
			}
		}
	}
	for _, c := range []string{"CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"} {
		if fresh(c) {
			script.WriteString("-F " + c + "\n")
		}
	}
	for _, c := range []string{"CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK"} {
		if fresh(c) {
			script.WriteString("-X " + c + "\n")
		}
	}
	script.WriteString("COMMIT\n")
	cmd := exec.Command("iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("removing portmap's chains: %v: %s\n%s", err, out, script.String())
	}
	// iptables-nft leaves empty tables behind (portmap's DEL creates the
	// IPv6 nat table even for IPv4 pods); only nft removes them.
	for _, f := range []struct{ save, family, before string }{{"iptables-save", "ip", before}, {"ip6tables-save", "ip6", before6}} {
		for _, table := range []string{"nat", "filter", "mangle"} {
			rules, _ := exec.Command(f.save, "-t", table).Output()
			if !strings.Contains(f.before, "*"+table+"\n") && strings.Contains(string(rules), "*"+table+"\n") && !strings.Contains(string(rules), "\n-A ") && !hasUserChain(string(rules)) {
				_ = exec.Command("nft", "delete", "table", f.family, table).Run()
			}
		}
	}
}

func hasUserChain(save string) bool {
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, ":") && strings.Contains(line, " - [") {
			return true
		}
	}
	return false
}

// newNetNS creates a network namespace pinned on a file in a temp dir.
func newNetNS(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("unshare", "--net="+path, "true").CombinedOutput(); err != nil {
		t.Fatalf("unshare: %v: %s", err, out)
	}
	t.Cleanup(func() { removeNetNS(t, path) })
	return path
}

func removeNetNS(t testing.TB, path string) {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		t.Errorf("unmount %s: %v", path, err)
	}
}

func newPod(t testing.TB, ports ...PortMapping) Pod {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	return Pod{ID: id, Name: "pod-" + id[:6], Namespace: "default", UID: id[:16], NetNS: newNetNS(t), PortMappings: ports}
}

// setup attaches pod and registers its teardown.
func (e *env) setup(pod Pod) *Result {
	e.t.Helper()
	res, err := e.m.Setup(context.Background(), pod)
	if err != nil {
		e.t.Fatalf("Setup: %v", err)
	}
	e.t.Cleanup(func() {
		if err := e.m.Teardown(context.Background(), pod); err != nil {
			e.t.Errorf("cleanup Teardown: %v", err)
		}
	})
	return res
}

func inNetNS(netns string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + netns}, args...)...).CombinedOutput()
	return string(out), err
}

// ipReserved says whether host-local holds ip for the test network.
func (e *env) ipReserved(ip string) bool {
	_, err := os.Stat(filepath.Join(e.ipamDir, ip))
	return err == nil
}

// leftovers lists what the host still holds for pod.
func (e *env) leftovers(pod Pod, ips []string) []string {
	var left []string
	for _, ip := range ips {
		if e.ipReserved(ip) {
			left = append(left, "host-local reservation of "+ip)
		}
	}
	if save, _ := exec.Command("iptables-save").Output(); strings.Contains(string(save), pod.ID) {
		left = append(left, "iptables rules naming the pod")
	}
	if entries, _ := os.ReadDir(filepath.Join(e.opts.CacheDir, "results")); len(entries) > 0 {
		left = append(left, fmt.Sprintf("%d CNI cache entries", len(entries)))
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", "master", testBridge).Output(); len(out) > 0 {
		left = append(left, "bridge ports: "+string(out))
	}
	return left
}

func TestReady(t *testing.T) {
	e := newEnv(t, confOpts{})
	if err := e.m.Ready(); err != nil {
		t.Fatalf("Ready with config = %v", err)
	}
	if err := os.Remove(filepath.Join(e.confDir, "10-test.conflist")); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Ready(); !errors.Is(err, ErrNoConfig) {
		t.Fatalf("Ready after removing the config = %v", err)
	}
}

func TestSetupTeardown(t *testing.T) {
	e := newEnv(t, confOpts{})
	pod := newPod(t)
	start := time.Now()
	res, err := e.m.Setup(context.Background(), pod)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Logf("Setup took %v: %+v", time.Since(start), res)
	_, subnet, _ := net.ParseCIDR(testSubnet)
	if res.Network != testNet || res.Interface != "eth0" || len(res.IPs) != 1 || !subnet.Contains(net.ParseIP(res.IPs[0])) {
		t.Fatalf("result %+v, want one IP in %s", res, testSubnet)
	}
	if !e.ipReserved(res.IPs[0]) {
		t.Error("host-local has no reservation for", res.IPs[0])
	}
	for _, dev := range []string{"lo", "eth0"} {
		out, err := inNetNS(pod.NetNS, "ip", "-o", "link", "show", "dev", dev, "up")
		if err != nil || !strings.Contains(out, dev) {
			t.Errorf("%s is not up in the pod: %v %s", dev, err, out)
		}
	}
	if out, err := inNetNS(pod.NetNS, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, res.IPs[0]+"/24") {
		t.Errorf("eth0 lacks %s: %v %s", res.IPs[0], err, out)
	}
	if out, err := inNetNS(pod.NetNS, "/bin/busybox", "ping", "-c1", "-W2", "127.0.0.1"); err != nil {
		t.Errorf("ping on the pod's lo: %v %s", err, out)
	}
	if save, _ := exec.Command("iptables-save").Output(); !strings.Contains(string(save), pod.ID) {
		t.Error("no ipMasq rule for the pod")
	}

	if err := e.m.Teardown(context.Background(), pod); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if left := e.leftovers(pod, res.IPs); len(left) > 0 {
		t.Errorf("after Teardown: %v", left)
	}
	if out, err := inNetNS(pod.NetNS, "ip", "-o", "link", "show", "dev", "eth0"); err == nil {
		t.Error("eth0 still in the pod:", out)
	}
	if err := e.m.Teardown(context.Background(), pod); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
}

func TestPodsPingEachOther(t *testing.T) {
	e := newEnv(t, confOpts{})
	a, b := newPod(t), newPod(t)
	ra, rb := e.setup(a), e.setup(b)
	if ra.IPs[0] == rb.IPs[0] {
		t.Fatalf("both pods got %s", ra.IPs[0])
	}
	for _, c := range []struct {
		from Pod
		to   string
	}{{a, rb.IPs[0]}, {b, ra.IPs[0]}} {
		if out, err := inNetNS(c.from.NetNS, "/bin/busybox", "ping", "-c1", "-W2", c.to); err != nil {
			t.Errorf("ping %s: %v\n%s", c.to, err, out)
		}
	}
}

func TestHostPortFromLoopback(t *testing.T) {
	e := newEnv(t, confOpts{})
	pod := newPod(t, PortMapping{HostPort: 18080, ContainerPort: 80, Protocol: "TCP"})
	e.setup(pod)

	// -ll: keep listening, so the first probe does not use up the listener.
	nc := exec.Command("nsenter", "--net="+pod.NetNS, "/bin/busybox", "nc", "-ll", "-p", "80", "-e", "echo", "hello")
	if err := nc.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = nc.Process.Kill(); _ = nc.Wait() }()

	var got string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", "127.0.0.1:18080", time.Second)
		if err == nil {
			_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
			b, _ := io.ReadAll(conn)
			conn.Close()
			if got = string(b); got == "hello\n" {
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got != "hello\n" {
		t.Fatalf("127.0.0.1:18080 answered %q, want hello", got)
	}
	if err := e.m.Teardown(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if save, _ := exec.Command("iptables-save").Output(); strings.Contains(string(save), "18080") {
		t.Error("port mapping rules left after Teardown")
	}
}

func TestTeardownAfterRestart(t *testing.T) {
	e := newEnv(t, confOpts{})
	pod := newPod(t, PortMapping{HostPort: 18081, ContainerPort: 80})
	res, err := e.m.Setup(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(e.confDir, "10-test.conflist")); err != nil {
		t.Fatal(err)
	}
	fresh := New(e.opts)
	if fresh.Ready() == nil {
		t.Fatal("Ready without a config")
	}
	if err := fresh.Teardown(context.Background(), pod); err != nil {
		t.Fatalf("Teardown from a fresh Manager: %v", err)
	}
	if left := e.leftovers(pod, res.IPs); len(left) > 0 {
		t.Errorf("after Teardown: %v", left)
	}
	if err := fresh.Teardown(context.Background(), pod); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
}

func TestTeardownWithoutNetNS(t *testing.T) {
	// Without ipMasq: the bridge plugin cannot find a gone pod's addresses
	// to remove its masquerade rule (see Teardown).
	e := newEnv(t, confOpts{noMasq: true})
	pod := newPod(t)
	if err := e.m.Teardown(context.Background(), pod); err != nil {
		t.Errorf("Teardown of a pod never set up: %v", err)
	}
	res, err := e.m.Setup(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	removeNetNS(t, pod.NetNS)
	// The kernel destroys the namespace, and with it the veth,
	// asynchronously, and slowly when the machine is busy.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		out, _ := exec.Command("ip", "-o", "link", "show", "master", testBridge).Output()
		if len(out) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the kernel kept the veth of a removed network namespace: %s", out)
		}
	}
	if err := e.m.Teardown(context.Background(), pod); err != nil {
		t.Fatalf("Teardown with the netns gone: %v", err)
	}
	pod.NetNS = "/run/pier/netns/does-not-exist"
	if err := e.m.Teardown(context.Background(), pod); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	if left := e.leftovers(pod, res.IPs); len(left) > 0 {
		t.Errorf("after Teardown: %v", left)
	}
}

func TestSetupFailureLeavesNothing(t *testing.T) {
	for _, c := range []struct {
		name, plugin, msg string
	}{
		{"missing plugin", "pier-test-missing", `failed to find plugin "pier-test-missing"`},
		{"failing plugin", "pier-test-fail", "pier test failure"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, confOpts{extra: fmt.Sprintf(`{"type": %q}`, c.plugin)})
			writeFile(t, e.binDir, "pier-test-fail", `#!/bin/sh
[ "$CNI_COMMAND" = ADD ] || exit 0
echo '{"cniVersion": "1.0.0", "code": 100, "msg": "pier test failure"}'
exit 1
`)
			if err := os.Chmod(filepath.Join(e.binDir, "pier-test-fail"), 0o755); err != nil {
				t.Fatal(err)
			}
			pod := newPod(t, PortMapping{HostPort: 18082, ContainerPort: 80})
			_, err := e.m.Setup(context.Background(), pod)
			if err == nil {
				t.Fatal("Setup succeeded")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), `network "piertest"`) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("error %q does not name the network and %q", err, c.msg)
			}
			if strings.Contains(err.Error(), "cleanup") {
				t.Errorf("cleanup failed: %v", err)
			}
			entries, _ := os.ReadDir(e.ipamDir)
			for _, en := range entries {
				if net.ParseIP(en.Name()) != nil {
					t.Errorf("host-local still reserves %s", en.Name())
				}
			}
			if left := e.leftovers(pod, nil); len(left) > 0 {
				t.Errorf("after failed Setup: %v", left)
			}
			if err := e.m.Teardown(context.Background(), pod); err != nil {
				t.Errorf("Teardown after failed Setup: %v", err)
			}
		})
	}
}

// BenchmarkSetup measures Setup and Teardown for configurations with more
// and more iptables work. Run: go test ./cni -run XXX -bench Setup -benchtime 30x
func BenchmarkSetup(b *testing.B) {
	for _, c := range []struct {
		name  string
		co    confOpts
		ports []PortMapping
	}{
		{"bridge", confOpts{noMasq: true, noPortmap: true}, nil},
		{"bridge+ipMasq", confOpts{noPortmap: true}, nil},
		{"bridge+ipMasq+portmap", confOpts{}, nil},
		{"bridge+ipMasq+portmap+1port", confOpts{}, []PortMapping{{HostPort: 18083, ContainerPort: 80}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			e := newEnv(b, c.co)
			pod := newPod(b, c.ports...)
			var setup, teardown []time.Duration
			for b.Loop() {
				start := time.Now()
				if _, err := e.m.Setup(context.Background(), pod); err != nil {
					b.Fatal(err)
				}
				mid := time.Now()
				if err := e.m.Teardown(context.Background(), pod); err != nil {
					b.Fatal(err)
				}
				setup, teardown = append(setup, mid.Sub(start)), append(teardown, time.Since(mid))
			}
			b.ReportMetric(median(setup), "setup-ms")
			b.ReportMetric(median(teardown), "teardown-ms")
		})
	}
}

func median(ds []time.Duration) float64 {
	slices.Sort(ds)
	return float64(ds[len(ds)/2]) / float64(time.Millisecond)
}

// BenchmarkLoopbackUp measures bringing up lo in a pod (a thread, a setns and two ioctls).
func BenchmarkLoopbackUp(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	netns := newNetNS(b)
	for b.Loop() {
		if err := loopbackUp(netns); err != nil {
			b.Fatal(err)
		}
	}
}

// TestTeardownEndsStrayPlugins: a pierd killed during a pod's ADD leaves
// its plugins running; the Teardown of the interrupted pod ends them before
// its DEL, so that none adds anything after it.
func TestTeardownEndsStrayPlugins(t *testing.T) {
	m := New(Options{ConfDir: t.TempDir(), PluginDirs: []string{t.TempDir()}, CacheDir: t.TempDir()})
	pod := Pod{ID: "0123456789abcdef", NetNS: "/nonexistent", Interrupted: true}
	// A plugin of the interrupted ADD (blocked, for the test, on its stdin),
	// and a process of another pod's.
	start := func(id string) *exec.Cmd {
		cmd := exec.Command("sh", "-c", "read x")
		cmd.Env = append(os.Environ(), "CNI_COMMAND=ADD", "CNI_CONTAINERID="+id)
		if _, err := cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	stray, other := start(pod.ID), start(pod.ID+"0")
	if err := m.Teardown(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	if !proc.Ended(stray.Process.Pid) {
		t.Error("the interrupted ADD's plugin still runs after Teardown")
	}
	if proc.Ended(other.Process.Pid) {
		t.Error("Teardown ended another pod's plugin")
	}
}
