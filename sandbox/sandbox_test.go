package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pier-runtime/pier/cgroup"
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
	if sysctlPath("net.ipv4.conf.eth0/1.rp_filter") != "net.ipv4.conf.eth0/1.rp_filter" || sysctlPath("net.core.somaxconn") != "net/core/somaxconn" {
		t.Error("sysctl paths")
	}
}
