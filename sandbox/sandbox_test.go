package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/cni"
	"github.com/pier-runtime/pier/internal/proc"
)

// hostPod needs no namespaces and no CNI, so the tests run without root.
func hostPod(name string) Config {
	return Config{Name: name, Namespace: "ns", UID: "uid-" + name, HostNetwork: true, HostIPC: true, HostPID: true}
}

func newManager(t *testing.T) *Manager {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 192.0.2.53\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "hosts"), []byte("127.0.0.1 localhost node\n"), 0o644)
	m, err := New(Options{Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "state"), Cgroups: &cgroup.Node{Driver: cgroup.Cgroupfs},
		ResolvConf: filepath.Join(dir, "resolv.conf"), Hosts: filepath.Join(dir, "hosts")})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRunStopRemoveAndReload(t *testing.T) {
	m := newManager(t)
	sb, err := m.Run(context.Background(), hostPod("a"))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(sb.ResolvConfPath()); string(b) != "nameserver 192.0.2.53\n" {
		t.Fatalf("resolv.conf without DNS config: %q", b)
	}
	if _, err := m.Run(context.Background(), hostPod("a")); !errors.Is(err, ErrAlreadyExists) || !strings.Contains(err.Error(), sb.ID) {
		t.Fatalf("second run of the same pod: %v", err)
	}
	// A restart finds the pod as it was.
	m2, err := New(m.opts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m2.Get(sb.ID[:8])
	if err != nil || got.State != Ready || got.Config.UID != "uid-a" || !got.CreatedAt.Equal(sb.CreatedAt) {
		t.Fatalf("reloaded: %+v %v", got, err)
	}
	for i := 0; i < 2; i++ {
		if err := m2.Stop(context.Background(), sb.ID); err != nil {
			t.Fatal(err)
		}
	}
	if l := m2.List(Filter{State: Ready}); len(l) != 0 {
		t.Fatalf("ready pods after stop: %v", l)
	}
	if err := m2.Remove(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := m2.Remove(context.Background(), sb.ID); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := os.Stat(sb.Dir); !os.IsNotExist(err) {
		t.Fatal("pod directory left after remove")
	}
	// The name is free again.
	if _, err := m2.Run(context.Background(), hostPod("a")); err != nil {
		t.Fatal(err)
	}
}

// TestRetryAfterTimeout: kubelet gave up on a RunPodSandbox that finished
// later; its retry gets that sandbox, and only once.
func TestRetryAfterTimeout(t *testing.T) {
	m := newManager(t)
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	first, err := m.Run(gone, hostPod("slow"))
	if err != nil {
		t.Fatal(err)
	}
	retry, err := m.Run(context.Background(), hostPod("slow"))
	if err != nil || retry.ID != first.ID {
		t.Fatalf("retry: %v %v", retry, err)
	}
	if _, err := m.Run(context.Background(), hostPod("slow")); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("a third run: %v", err)
	}
}

func TestInterruptedCreateIsUndone(t *testing.T) {
	m := newManager(t)
	sb, err := m.Run(context.Background(), hostPod("x"))
	if err != nil {
		t.Fatal(err)
	}
	sb.Creating = true // as if pierd died before the pod was ready
	if err := m.save(sb); err != nil {
		t.Fatal(err)
	}
	m2, err := New(m.opts)
	if err != nil {
		t.Fatal(err)
	}
	if l := m2.List(Filter{}); len(l) != 0 {
		t.Fatalf("half-made pod loaded: %v", l)
	}
	if _, err := os.Stat(sb.Dir); !os.IsNotExist(err) {
		t.Fatal("half-made pod's directory kept")
	}
}

func TestValidate(t *testing.T) {
	m := newManager(t)
	bad := map[string]Config{
		"no uid":             {Name: "a", Namespace: "b"},
		"host sysctl":        {Name: "a", Namespace: "b", UID: "c", Sysctls: map[string]string{"kernel.panic": "1"}},
		"net sysctl hostnet": {Name: "a", Namespace: "b", UID: "c", HostNetwork: true, Sysctls: map[string]string{"net.ipv4.ip_forward": "1"}},
		"ipc sysctl hostipc": {Name: "a", Namespace: "b", UID: "c", HostIPC: true, Sysctls: map[string]string{"kernel.shmmax": "1"}},
		"relative cgroup":    {Name: "a", Namespace: "b", UID: "c", CgroupParent: "kubepods"},
		// Sysctl keys are paths under /proc/sys: nothing may leave it.
		"sysctl dotdot":          {Name: "a", Namespace: "b", UID: "c", Sysctls: map[string]string{"net/../../../tmp/x": "1"}},
		"sysctl dotdot dots":     {Name: "a", Namespace: "b", UID: "c", Sysctls: map[string]string{"net.ipv4.conf...x": "1"}},
		"sysctl absolute":        {Name: "a", Namespace: "b", UID: "c", Sysctls: map[string]string{"/net/core/somaxconn": "1"}},
		"sysctl empty component": {Name: "a", Namespace: "b", UID: "c", Sysctls: map[string]string{"net//core/somaxconn": "1"}},
		"sysctl newline":         {Name: "a", Namespace: "b", UID: "c", Sysctls: map[string]string{"net.core.x\ny": "1"}},
		// What reaches CNI_ARGS, /etc/hosts and /etc/resolv.conf.
		"name with ;":         {Name: "a;K8S_POD_NAMESPACE=x", Namespace: "b", UID: "c"},
		"namespace with =":    {Name: "a", Namespace: "b=c", UID: "c"},
		"uid with /":          {Name: "a", Namespace: "b", UID: "../c"},
		"name with newline":   {Name: "a\nb", Namespace: "b", UID: "c"},
		"hostname newline":    {Name: "a", Namespace: "b", UID: "c", Hostname: "web\n10.0.0.1 evil"},
		"hostname space":      {Name: "a", Namespace: "b", UID: "c", Hostname: "web evil"},
		"hostname too long":   {Name: "a", Namespace: "b", UID: "c", Hostname: strings.Repeat("a", 65)},
		"hostname dash":       {Name: "a", Namespace: "b", UID: "c", Hostname: "-web"},
		"dns server not ip":   {Name: "a", Namespace: "b", UID: "c", DNS: &DNSConfig{Servers: []string{"10.0.0.10\nnameserver 6.6.6.6"}}},
		"dns search newline":  {Name: "a", Namespace: "b", UID: "c", DNS: &DNSConfig{Searches: []string{"svc\nnameserver 6.6.6.6"}}},
		"dns search space":    {Name: "a", Namespace: "b", UID: "c", DNS: &DNSConfig{Searches: []string{"a b"}}},
		"dns option newline":  {Name: "a", Namespace: "b", UID: "c", DNS: &DNSConfig{Options: []string{"ndots:5\nnameserver 6.6.6.6"}}},
		"dns option space":    {Name: "a", Namespace: "b", UID: "c", DNS: &DNSConfig{Options: []string{"ndots: 5"}}},
		"dns option no value": {Name: "a", Namespace: "b", UID: "c", DNS: &DNSConfig{Options: []string{"ndots:"}}},
	}
	for name, c := range bad {
		if err := m.validate(&c); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	m.opts.Cgroups = &cgroup.Node{Driver: cgroup.Systemd}
	if err := m.validate(&Config{Name: "a", Namespace: "b", UID: "c", CgroupParent: "/kubepods"}); !errors.Is(err, ErrInvalid) {
		t.Error("systemd driver accepted a path")
	}
	if err := m.validate(&Config{Name: "a", Namespace: "b", UID: "c", CgroupParent: "kubepods-pod1.slice", Sysctls: map[string]string{"net.core.somaxconn": "1024", "kernel.msgmax": "8192"}}); err != nil {
		t.Error(err)
	}
	// What kubelet and critest send.
	good := Config{
		Name: "PodSandbox-with-log-directory-5b1e2c4a-0000-4c9e-9f3a-1234567890ab", Namespace: "cri-test-namespace5b1e2c4a", UID: "cri-test-uid5b1e2c4a-0000-4c9e-9f3a-1234567890ab",
		Hostname: "web-0.nginx", CgroupParent: "kubepods-pod1.slice",
		DNS: &DNSConfig{
			Servers:  []string{"10.96.0.10", "fd00::a", "fe80::1%eth0"},
			Searches: []string{"default.svc.cluster.local", "svc.cluster.local", "example_corp.internal.", "."},
			Options:  []string{"ndots:5", "edns0", "single-request-reopen", "timeout:2"},
		},
		Sysctls: map[string]string{"net/ipv4/conf/eth0.1/rp_filter": "1", "net.ipv4.conf.eth0/1.rp_filter": "1", "kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "100", "kernel.domainname": "x"},
	}
	if err := m.validate(&good); err != nil {
		t.Error(err)
	}
	// A host network pod has the node's hostname, whatever it is sent.
	if err := m.validate(&Config{Name: "a", Namespace: "b", UID: "c", HostNetwork: true, Hostname: "node_1"}); err != nil {
		t.Error(err)
	}
}

func TestSysctlPath(t *testing.T) {
	for key, want := range map[string]string{
		"net.core.somaxconn":             "net/core/somaxconn",
		"net.ipv4.conf.eth0/1.rp_filter": "net/ipv4/conf/eth0.1/rp_filter",
		"net/ipv4/conf/eth0.1/rp_filter": "net/ipv4/conf/eth0.1/rp_filter",
		"kernel/shm_rmid_forced":         "kernel/shm_rmid_forced",
	} {
		if got, err := sysctlPath(key); got != want || err != nil {
			t.Errorf("sysctlPath(%q) = %q, %v; want %q", key, got, err, want)
		}
	}
	for _, key := range []string{"", ".", "net/../../etc/x", "net.core..x", "/net/core/x", "net/core/", "net.core.x\x00"} {
		if got, err := sysctlPath(key); err == nil {
			t.Errorf("sysctlPath(%q) = %q, want an error", key, got)
		}
	}
	for path, want := range map[string]string{
		"net/core/somaxconn": "net", "kernel/sem": "ipc", "kernel/shmmax": "ipc", "fs/mqueue/msg_max": "ipc",
		"kernel/hostname": "uts", "kernel/panic": "", "netfilter/x": "", "fs/file-max": "",
	} {
		if got := sysctlNamespace(path); got != want {
			t.Errorf("sysctlNamespace(%q) = %q, want %q", path, got, want)
		}
	}
}

// TestWriteSysctls: a sysctl is written beneath the root, never through a
// symbolic link or "..", even if validate let a key through.
func TestWriteSysctls(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(root, "net", "core"), 0o755)
	os.WriteFile(filepath.Join(root, "net", "core", "somaxconn"), []byte("128"), 0o644)
	os.Symlink(outside, filepath.Join(root, "net", "link"))
	if err := writeSysctls(root, map[string]string{"net.core.somaxconn": "1024"}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "net", "core", "somaxconn")); string(b) != "1024" {
		t.Fatalf("somaxconn = %q", b)
	}
	for _, key := range []string{"net/link/x", "net/core/missing"} {
		if err := writeSysctls(root, map[string]string{key: "1"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", key, err)
		}
	}
	if err := writeSysctl(root, "net/../../x", "1"); err == nil {
		t.Error("a key with .. was written")
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Errorf("written outside the root: %v", entries)
	}
}

// TestPodDirsPrivate: a pod's directories are root's alone; the files
// containers bind-mount stay readable by all.
func TestPodDirsPrivate(t *testing.T) {
	m := newManager(t)
	got, err := m.Run(context.Background(), hostPod("b"))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		got.Dir: 0o700, filepath.Join(m.opts.State, got.ID): 0o700,
		got.HostsPath(): 0o644, got.ResolvConfPath(): 0o644, got.HostnamePath(): 0o644,
	} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode().Perm(), err, want)
		}
	}
}

func TestPodFiles(t *testing.T) {
	hosts := podHosts("web", []string{"10.88.0.5", "fd00::5"})
	for _, want := range []string{"127.0.0.1\tlocalhost\n", "10.88.0.5\tweb\n", "fd00::5\tweb\n"} {
		if !strings.Contains(hosts, want) {
			t.Errorf("hosts lacks %q:\n%s", want, hosts)
		}
	}
	m := newManager(t)
	b, err := m.resolvConf(&DNSConfig{Servers: []string{"10.0.0.10"}, Searches: []string{"a.svc", "svc"}, Options: []string{"ndots:5"}})
	if err != nil || string(b) != "nameserver 10.0.0.10\nsearch a.svc svc\noptions ndots:5\n" {
		t.Fatalf("resolv.conf: %q %v", b, err)
	}
}

func TestValidateUserNamespace(t *testing.T) {
	m := newManager(t)
	one := []IDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
	pod := func(u *UserNamespace) Config {
		return Config{Name: "a", Namespace: "b", UID: "c", UserNamespace: u}
	}
	bad := map[string]Config{
		"CONTAINER":         pod(&UserNamespace{Mode: "CONTAINER"}),
		"TARGET":            pod(&UserNamespace{Mode: "TARGET"}),
		"NODE with maps":    pod(&UserNamespace{Mode: "NODE", UIDs: one, GIDs: one}),
		"two mappings":      pod(&UserNamespace{Mode: "POD", UIDs: append(slices.Clone(one), IDMapping{ContainerID: 65536, HostID: 300000, Size: 1}), GIDs: one}),
		"uids only":         pod(&UserNamespace{Mode: "POD", UIDs: one}),
		"no mappings":       pod(&UserNamespace{Mode: "POD"}),
		"0 not mapped":      pod(&UserNamespace{Mode: "POD", UIDs: []IDMapping{{ContainerID: 1, HostID: 1000, Size: 100000}}, GIDs: one}),
		"length 0":          pod(&UserNamespace{Mode: "POD", UIDs: one, GIDs: []IDMapping{{HostID: 1000}}}),
		"host ids overflow": pod(&UserNamespace{Mode: "POD", UIDs: []IDMapping{{HostID: 1 << 31, Size: 1 << 31}}, GIDs: one}),
		"host root":         pod(&UserNamespace{Mode: "POD", UIDs: []IDMapping{{HostID: 0, Size: 65536}}, GIDs: one}),
		"host network": func() Config {
			c := pod(&UserNamespace{Mode: "POD", UIDs: one, GIDs: one})
			c.HostNetwork = true
			return c
		}(),
	}
	for name, c := range bad {
		if err := m.validate(&c); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	node := pod(&UserNamespace{Mode: "NODE"})
	if err := m.validate(&node); err != nil || node.UserNamespace != nil {
		t.Errorf("mode NODE: %v, %+v", err, node.UserNamespace)
	}
	good := pod(&UserNamespace{Mode: "POD", UIDs: []IDMapping{{HostID: 1000, Size: 100000}}, GIDs: []IDMapping{{HostID: 1 << 31, Size: 1<<31 - 1}}})
	if err := m.validate(&good); err != nil {
		t.Error(err)
	}
	if uid, gid := good.UserNamespace.HostRoot(); uid != 1000 || gid != 1<<31 {
		t.Errorf("HostRoot = %d, %d", uid, gid)
	}
}

// blockingNetwork is a CNI whose Teardown of a pod announces itself on
// entered and returns when release is closed.
type blockingNetwork struct {
	entered chan string
	release chan struct{}
	mu      sync.Mutex
	active  map[string]int // Teardowns running, by pod
	overlap bool           // two Teardowns of one pod ran at once
}

func (n *blockingNetwork) Setup(context.Context, cni.Pod) (*cni.Result, error) {
	return nil, errors.New("the test network makes no pods")
}

func (n *blockingNetwork) Teardown(_ context.Context, p cni.Pod) error {
	n.mu.Lock()
	n.active[p.ID]++
	n.overlap = n.overlap || n.active[p.ID] > 1
	n.mu.Unlock()
	n.entered <- p.ID
	<-n.release
	n.mu.Lock()
	n.active[p.ID]--
	n.mu.Unlock()
	return nil
}

// networkPod runs a host-network pod, then rewrites its record as a pod
// with a network of its own (which needs no root once made) and restarts
// the manager with net as its CNI.
func networkPod(t *testing.T, m *Manager, name string, net Network) (*Manager, *Sandbox) {
	t.Helper()
	sb, err := m.Run(context.Background(), hostPod(name))
	if err != nil {
		t.Fatal(err)
	}
	sb.Config.HostNetwork = false
	if err := m.save(sb); err != nil {
		t.Fatal(err)
	}
	opts := m.opts
	opts.CNI = net
	m2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return m2, sb
}

// waitOrFail waits for done; a deadline just short of the test's turns a
// hang into a failure that says what hung.
func waitOrFail(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	var expire <-chan time.Time
	if d, ok := t.Deadline(); ok {
		expire = time.After(time.Until(d) - 5*time.Second)
	}
	select {
	case <-done:
	case <-expire:
		t.Fatalf("%s waited for another pod's CNI DEL", what)
	}
}

// TestStopDoesNotBlockOthers: while one pod's Stop waits in CNI DEL, the
// calls on other pods, List and Get return.
func TestStopDoesNotBlockOthers(t *testing.T) {
	net := &blockingNetwork{entered: make(chan string), release: make(chan struct{}), active: map[string]int{}}
	m := newManager(t)
	if _, err := m.Run(context.Background(), hostPod("other")); err != nil {
		t.Fatal(err)
	}
	m, slow := networkPod(t, m, "slow", net)
	stopped := make(chan error, 1)
	go func() { stopped <- m.Stop(context.Background(), slow.ID) }()
	<-net.entered

	done := make(chan struct{})
	go func() {
		defer close(done)
		if l := m.List(Filter{}); len(l) != 2 {
			t.Errorf("List: %d pods, want 2", len(l))
		}
		// Its network is half gone: it is not ready any more.
		if sb, err := m.Get(slow.ID); err != nil || sb.State != NotReady {
			t.Errorf("Get of the pod being stopped: %+v %v", sb, err)
		}
		var other *Sandbox
		for _, sb := range m.List(Filter{}) {
			if sb.Config.Name == "other" {
				other = sb
			}
		}
		if err := m.Stop(context.Background(), other.ID); err != nil {
			t.Errorf("Stop of another pod: %v", err)
		}
		if err := m.Remove(context.Background(), other.ID); err != nil {
			t.Errorf("Remove of another pod: %v", err)
		}
		if _, err := m.Run(context.Background(), hostPod("new")); err != nil {
			t.Errorf("Run of another pod: %v", err)
		}
	}()
	waitOrFail(t, done, "List, Get, Stop, Remove or Run")
	close(net.release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if sb, err := m.Get(slow.ID); err != nil || sb.State != NotReady {
		t.Fatalf("after Stop: %+v %v", sb, err)
	}
}

// TestStopRemoveOfOnePodSerialised: Stop and Remove of one pod, and List
// and Get, race; the pod's CNI DELs never overlap and it ends removed.
func TestStopRemoveOfOnePodSerialised(t *testing.T) {
	net := &blockingNetwork{entered: make(chan string, 100), release: make(chan struct{}), active: map[string]int{}}
	close(net.release)
	m, sb := networkPod(t, newManager(t), "p", net)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			switch i % 4 {
			case 0:
				err = m.Stop(context.Background(), sb.ID)
			case 1:
				err = m.Remove(context.Background(), sb.ID)
			case 2:
				m.List(Filter{State: Ready})
			case 3:
				if _, err := m.Get(sb.ID); err != nil && !errors.Is(err, ErrNotFound) {
					t.Error(err)
				}
			}
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if net.overlap {
		t.Error("two CNI DELs of one pod ran at once")
	}
	if _, err := m.Get(sb.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("pod after Remove: %v", err)
	}
	if _, err := os.Stat(sb.Dir); !os.IsNotExist(err) {
		t.Fatal("pod directory left after remove")
	}
}

// TestInitOfAnotherBootIsGone: a pod whose recorded init has the pid and
// start time of a live pier-shim, but was recorded in another boot, is
// loaded not ready, and nothing is signalled.
func TestInitOfAnotherBootIsGone(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	cmd.Args[0] = "pier-shim" // as proc.IsShim knows pier's processes
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid

	m := newManager(t)
	sb, err := m.Run(context.Background(), hostPod("a"))
	if err != nil {
		t.Fatal(err)
	}
	// The record as a pod with a shared PID namespace leaves it.
	rec := *sb
	rec.InitPid, rec.InitStart, rec.InitBoot = pid, proc.StartTime(pid), proc.BootID()
	if !rec.InitAlive() {
		t.Fatal("the live init of this boot is taken for gone")
	}
	rec.InitBoot = "00000000-0000-0000-0000-000000000000"
	if rec.InitAlive() {
		t.Fatal("an init recorded in another boot is taken for this boot's")
	}
	if err := m.save(&rec); err != nil {
		t.Fatal(err)
	}
	m2, err := New(m.opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m2.Get(sb.ID); err != nil || got.State != NotReady {
		t.Fatalf("pod whose init is of another boot: %+v %v", got, err)
	}
	if err := m2.Remove(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("a process of this boot was killed for another boot's init: %v", err)
	}
}

// TestLoadUndoesInterruptedPodsTogether: pods whose creation a killed
// pierd interrupted are undone several at a time at start-up, so one slow
// CNI DEL does not hold every other back.
func TestLoadUndoesInterruptedPodsTogether(t *testing.T) {
	m := newManager(t)
	const n = 3
	for i := 0; i < n; i++ {
		cfg := hostPod(fmt.Sprintf("p%d", i))
		cfg.HostNetwork = false
		sb := &Sandbox{Version: recordVersion, ID: fmt.Sprintf("%064d", i), Config: cfg, Creating: true, Dir: filepath.Join(m.opts.Root, fmt.Sprintf("%064d", i))}
		if err := os.MkdirAll(sb.Dir, dirMode); err != nil {
			t.Fatal(err)
		}
		if err := m.save(sb); err != nil {
			t.Fatal(err)
		}
	}
	net := &blockingNetwork{entered: make(chan string, n), release: make(chan struct{}), active: map[string]int{}}
	opts := m.opts
	opts.CNI = net
	loaded := make(chan error, 1)
	go func() {
		_, err := New(opts)
		loaded <- err
	}()
	// Every DEL must be under way before any is let go.
	for i := 0; i < n; i++ {
		select {
		case <-net.entered:
		case <-time.After(10 * time.Second):
			close(net.release)
			t.Fatalf("%d of %d interrupted pods' CNI DEL under way at once", i, n)
		}
	}
	close(net.release)
	if err := <-loaded; err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(m.opts.Root); len(entries) != 0 {
		t.Errorf("records left after undoing interrupted pods: %v", entries)
	}
}
