package container

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/confine"
	"github.com/pier-runtime/pier/oci"
	"github.com/pier-runtime/pier/sandbox"
)

func testPod() *sandbox.Sandbox {
	return &sandbox.Sandbox{
		ID: "pod1",
		Config: sandbox.Config{
			Name: "web", Namespace: "default", UID: "uid-1", Hostname: "web-0",
		},
		Namespaces: map[string]string{
			"net": "/run/pier/pods/pod1/ns/net",
			"ipc": "/run/pier/pods/pod1/ns/ipc",
			"uts": "/run/pier/pods/pod1/ns/uts",
		},
		Shm: "/run/pier/pods/pod1/shm",
		Dir: "/var/lib/pier/pods/pod1",
	}
}

// apply runs opt on a blank spec.
func apply(t *testing.T, opts ...SpecOpt) *specs.Spec {
	t.Helper()
	s := &specs.Spec{}
	for _, opt := range opts {
		if err := opt(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func mountAt(s *specs.Spec, dst string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dst {
			return &s.Mounts[i]
		}
	}
	return nil
}

func namespacesOf(s *specs.Spec) map[specs.LinuxNamespaceType]string {
	m := map[specs.LinuxNamespaceType]string{}
	for _, ns := range s.Linux.Namespaces {
		m[ns.Type] = ns.Path
	}
	return m
}

func TestOptBase(t *testing.T) {
	s := apply(t, WithBase())
	if s.Version != "1.0.2" || s.Root.Path != "rootfs" || s.Process.Cwd != "/" {
		t.Errorf("spec = %+v", s)
	}
	if d := s.Linux.Resources.Devices; len(d) != 1 || d[0].Allow || d[0].Access != "rwm" {
		t.Errorf("device cgroup = %+v, want deny all", d)
	}
}

func TestOptNamespaces(t *testing.T) {
	type nsMap = map[specs.LinuxNamespaceType]string
	for _, tc := range []struct {
		name    string
		pod     func(*sandbox.Sandbox)
		opts    *runtimeapi.NamespaceOption
		initPid int
		want    nsMap
		wantErr string
	}{
		{name: "own pod namespaces", want: nsMap{
			specs.MountNamespace: "", specs.PIDNamespace: "",
			specs.NetworkNamespace: "/run/pier/pods/pod1/ns/net", specs.IPCNamespace: "/run/pier/pods/pod1/ns/ipc", specs.UTSNamespace: "/run/pier/pods/pod1/ns/uts",
		}},
		{name: "host network", pod: func(p *sandbox.Sandbox) {
			p.Config.HostNetwork = true
			delete(p.Namespaces, "net")
			delete(p.Namespaces, "uts")
		}, want: nsMap{specs.MountNamespace: "", specs.PIDNamespace: "", specs.IPCNamespace: "/run/pier/pods/pod1/ns/ipc"}},
		{name: "host IPC", pod: func(p *sandbox.Sandbox) {
			p.Config.HostIPC = true
			delete(p.Namespaces, "ipc")
		}, want: nsMap{specs.MountNamespace: "", specs.PIDNamespace: "", specs.NetworkNamespace: "/run/pier/pods/pod1/ns/net", specs.UTSNamespace: "/run/pier/pods/pod1/ns/uts"}},
		{name: "host PID", pod: func(p *sandbox.Sandbox) { p.Config.HostPID = true },
			want: nsMap{specs.MountNamespace: "", specs.NetworkNamespace: "/run/pier/pods/pod1/ns/net", specs.IPCNamespace: "/run/pier/pods/pod1/ns/ipc", specs.UTSNamespace: "/run/pier/pods/pod1/ns/uts"}},
		{name: "pod PID", pod: func(p *sandbox.Sandbox) { p.Config.PodPID = true }, initPid: 42,
			want: nsMap{specs.MountNamespace: "", specs.PIDNamespace: "/proc/42/ns/pid", specs.NetworkNamespace: "/run/pier/pods/pod1/ns/net", specs.IPCNamespace: "/run/pier/pods/pod1/ns/ipc", specs.UTSNamespace: "/run/pier/pods/pod1/ns/uts"}},
		{name: "target PID", opts: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "c1"}, initPid: 77,
			want: nsMap{specs.MountNamespace: "", specs.PIDNamespace: "/proc/77/ns/pid", specs.NetworkNamespace: "/run/pier/pods/pod1/ns/net", specs.IPCNamespace: "/run/pier/pods/pod1/ns/ipc", specs.UTSNamespace: "/run/pier/pods/pod1/ns/uts"}},
		{name: "pod PID without init", pod: func(p *sandbox.Sandbox) { p.Config.PodPID = true }, wantErr: "no process"},
		{name: "missing pinned namespace", pod: func(p *sandbox.Sandbox) { delete(p.Namespaces, "net") }, wantErr: "no net namespace"},
		{name: "user namespace", opts: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD}}, wantErr: "user namespaces"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod()
			if tc.pod != nil {
				tc.pod(pod)
			}
			s := &specs.Spec{}
			err := WithNamespaces(pod, tc.opts, tc.initPid)(s)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := namespacesOf(s); len(got) != len(s.Linux.Namespaces) || !mapsEqual(got, tc.want) {
				t.Errorf("namespaces = %+v, want %v", s.Linux.Namespaces, tc.want)
			}
		})
	}
}

func mapsEqual[K comparable](a, b map[K]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestOptDefaultMounts(t *testing.T) {
	s := apply(t, WithDefaultMounts(testPod()))
	var dsts []string
	for _, m := range s.Mounts {
		dsts = append(dsts, m.Destination)
	}
	want := []string{"/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/dev/shm"}
	if !slices.Equal(dsts, want) {
		t.Errorf("mounts = %v, want %v", dsts, want)
	}
	if !slices.Contains(mountAt(s, "/sys/fs/cgroup").Options, "ro") {
		t.Error("/sys/fs/cgroup is not read-only")
	}
	if shm := mountAt(s, "/dev/shm"); shm.Type != "bind" || shm.Source != "/run/pier/pods/pod1/shm" {
		t.Errorf("/dev/shm = %+v", shm)
	}

	pod := testPod()
	pod.Config.HostIPC, pod.Shm = true, ""
	if shm := mountAt(apply(t, WithDefaultMounts(pod)), "/dev/shm"); shm.Source != "/dev/shm" || shm.Type != "bind" {
		t.Errorf("host IPC /dev/shm = %+v", shm)
	}
}

func TestOptMaskedPaths(t *testing.T) {
	s := apply(t, WithMaskedPaths([]string{"/proc/kcore"}, []string{"/proc/sys"}))
	if !slices.Equal(s.Linux.MaskedPaths, []string{"/proc/kcore"}) || !slices.Equal(s.Linux.ReadonlyPaths, []string{"/proc/sys"}) {
		t.Errorf("masked %v, readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	// None asked (kubelet's Unmasked proc mount): none.
	if err := WithMaskedPaths(nil, nil)(s); err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.MaskedPaths)+len(s.Linux.ReadonlyPaths) != 0 {
		t.Errorf("masked %v, readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
}

func TestOptCapabilities(t *testing.T) {
	all := knownCapabilities[:3] // CHOWN, DAC_OVERRIDE, DAC_READ_SEARCH
	for _, tc := range []struct {
		name       string
		add, drop  []string
		want       []string
		wantErr    string
		noDefaults bool
	}{
		{name: "nothing", want: defaultCapabilities},
		{name: "add with and without prefix, any case", add: []string{"NET_ADMIN", "cap_sys_time"},
			want: append(slices.Clone(defaultCapabilities), "CAP_NET_ADMIN", "CAP_SYS_TIME")},
		{name: "drop", drop: []string{"CAP_KILL", "net_raw"},
			want: slices.DeleteFunc(slices.Clone(defaultCapabilities), func(c string) bool { return c == "CAP_KILL" || c == "CAP_NET_RAW" })},
		{name: "drop ALL add one", drop: []string{"ALL"}, add: []string{"NET_BIND_SERVICE"}, want: []string{"CAP_NET_BIND_SERVICE"}},
		{name: "add ALL drop one", add: []string{"all"}, drop: []string{"CHOWN"}, want: []string{"CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH"}},
		{name: "add existing is not doubled", add: []string{"CHOWN"}, want: defaultCapabilities},
		{name: "unknown", add: []string{"FLY"}, wantErr: "unknown capability"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := apply(t, WithDefaultCapabilities())
			err := WithCapabilities(&runtimeapi.Capability{AddCapabilities: tc.add, DropCapabilities: tc.drop}, all)(s)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := s.Process.Capabilities
			for _, set := range [][]string{c.Bounding, c.Effective, c.Permitted} {
				if !slices.Equal(set, tc.want) {
					t.Errorf("capabilities = %v, want %v", set, tc.want)
				}
			}
			if len(c.Inheritable)+len(c.Ambient) != 0 {
				t.Errorf("inheritable %v, ambient %v", c.Inheritable, c.Ambient)
			}
		})
	}
	// Capabilities without any default: a blank spec.
	s := apply(t, WithCapabilities(&runtimeapi.Capability{AddCapabilities: []string{"KILL"}}, all))
	if !slices.Equal(s.Process.Capabilities.Bounding, []string{"CAP_KILL"}) {
		t.Errorf("bounding = %v", s.Process.Capabilities.Bounding)
	}
}

func TestOptSimple(t *testing.T) {
	s := apply(t, WithNofileLimit(4096))
	if err := WithNofileLimit(8192)(s); err != nil {
		t.Fatal(err)
	}
	if r := s.Process.Rlimits; len(r) != 1 || r[0] != (specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Hard: 8192, Soft: 8192}) {
		t.Errorf("rlimits = %+v", r)
	}
	if s := apply(t, WithCgroupsPath("/kubepods/pod1/c1")); s.Linux.CgroupsPath != "/kubepods/pod1/c1" {
		t.Errorf("cgroups path = %q", s.Linux.CgroupsPath)
	}
	if s := apply(t, WithTerminal(true)); !s.Process.Terminal {
		t.Error("no terminal")
	}
	if s := apply(t, WithReadonlyRootfs(true)); !s.Root.Readonly {
		t.Error("root is writable")
	}
	if s := apply(t, WithNoNewPrivs(true)); !s.Process.NoNewPrivileges {
		t.Error("no_new_privs not set")
	}
	if nofileLimit() == 0 {
		t.Error("nofile limit 0")
	}
	if caps := hostCapabilities(); len(caps) < len(defaultCapabilities) || caps[0] != "CAP_CHOWN" {
		t.Errorf("host capabilities = %v", caps)
	}
}

func TestOptHostname(t *testing.T) {
	if s := apply(t, WithHostname(testPod())); s.Hostname != "web-0" {
		t.Errorf("hostname = %q", s.Hostname)
	}
	pod := testPod()
	pod.Config.HostNetwork = true
	delete(pod.Namespaces, "uts")
	if s := apply(t, WithHostname(pod)); s.Hostname != "" {
		t.Errorf("hostname %q set in the host's UTS namespace", s.Hostname)
	}
}

func TestArgs(t *testing.T) {
	image := func(entrypoint, cmd []string) *v1.ConfigFile {
		return &v1.ConfigFile{Config: v1.Config{Entrypoint: entrypoint, Cmd: cmd}}
	}
	ep, cmd := []string{"/entry", "-x"}, []string{"serve", "--port=80"}
	for _, tc := range []struct {
		name          string
		command, args []string
		img           *v1.ConfigFile
		want          []string
	}{
		{"neither: ENTRYPOINT + CMD", nil, nil, image(ep, cmd), []string{"/entry", "-x", "serve", "--port=80"}},
		{"command replaces ENTRYPOINT and drops CMD", []string{"/bin/sh"}, nil, image(ep, cmd), []string{"/bin/sh"}},
		{"command and args replace both", []string{"/bin/sh"}, []string{"-c", "true"}, image(ep, cmd), []string{"/bin/sh", "-c", "true"}},
		{"args replace CMD and keep ENTRYPOINT", nil, []string{"run"}, image(ep, cmd), []string{"/entry", "-x", "run"}},
		{"only CMD", nil, nil, image(nil, cmd), []string{"serve", "--port=80"}},
		{"only ENTRYPOINT", nil, nil, image(ep, nil), []string{"/entry", "-x"}},
		{"args without ENTRYPOINT", nil, []string{"/bin/true"}, image(nil, cmd), []string{"/bin/true"}},
		{"empty-string ENTRYPOINT is none", nil, nil, image([]string{""}, cmd), []string{"serve", "--port=80"}},
		{"no image config", []string{"/pause"}, nil, nil, []string{"/pause"}},
		{"nothing at all", nil, nil, image(nil, nil), nil},
		{"command empty, no image", nil, nil, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &specs.Spec{}
			err := WithArgs(&runtimeapi.ContainerConfig{Command: tc.command, Args: tc.args}, tc.img)(s)
			if tc.want == nil {
				if err == nil || err.Error() != "no command specified" {
					t.Fatalf("error = %v, want no command specified", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Process.Args, tc.want) {
				t.Errorf("args = %q, want %q", s.Process.Args, tc.want)
			}
		})
	}
	// The image config is not modified.
	img := image(ep, cmd)
	s := apply(t, WithArgs(&runtimeapi.ContainerConfig{Args: []string{"a"}}, img))
	s.Process.Args[0] = "changed"
	if img.Config.Entrypoint[0] != "/entry" {
		t.Error("WithArgs shares the image config's slice")
	}
}

func TestEnv(t *testing.T) {
	kv := func(k, v string) *runtimeapi.KeyValue { return &runtimeapi.KeyValue{Key: k, Value: []byte(v)} }
	img := &v1.ConfigFile{Config: v1.Config{Env: []string{"PATH=/app/bin:/bin", "LANG=C", "EMPTY="}}}
	cfg := &runtimeapi.ContainerConfig{Envs: []*runtimeapi.KeyValue{kv("LANG", "C.UTF-8"), kv("FOO", "a=b")}}
	s := apply(t, WithEnv(cfg, img, "web-0"))
	want := []string{"HOSTNAME=web-0", "PATH=/app/bin:/bin", "LANG=C.UTF-8", "EMPTY=", "FOO=a=b"}
	if !slices.Equal(s.Process.Env, want) {
		t.Errorf("env = %q, want %q", s.Process.Env, want)
	}

	s = apply(t, WithEnv(&runtimeapi.ContainerConfig{}, nil, "node1"))
	if want := []string{"HOSTNAME=node1", defaultPath}; !slices.Equal(s.Process.Env, want) {
		t.Errorf("env = %q, want %q", s.Process.Env, want)
	}
	// The image or the CRI may set HOSTNAME.
	s = apply(t, WithEnv(&runtimeapi.ContainerConfig{Envs: []*runtimeapi.KeyValue{kv("HOSTNAME", "x")}}, nil, "node1"))
	if s.Process.Env[0] != "HOSTNAME=x" {
		t.Errorf("env = %q", s.Process.Env)
	}
	if err := WithEnv(&runtimeapi.ContainerConfig{Envs: []*runtimeapi.KeyValue{kv("", "x")}}, nil, "")(&specs.Spec{}); err == nil {
		t.Error("an env without a name is accepted")
	}
}

func TestOptCwd(t *testing.T) {
	img := &v1.ConfigFile{Config: v1.Config{WorkingDir: "/srv"}}
	for _, tc := range []struct {
		cfg  string
		img  *v1.ConfigFile
		want string
	}{
		{"/work", img, "/work"},
		{"", img, "/srv"},
		{"", nil, "/"},
		{"", &v1.ConfigFile{Config: v1.Config{WorkingDir: "app"}}, "/app"},
	} {
		if s := apply(t, WithCwd(&runtimeapi.ContainerConfig{WorkingDir: tc.cfg}, tc.img)); s.Process.Cwd != tc.want {
			t.Errorf("cwd(%q, %v) = %q, want %q", tc.cfg, tc.img, s.Process.Cwd, tc.want)
		}
	}
}

func TestMounts(t *testing.T) {
	pod := testPod()
	t.Run("pod files", func(t *testing.T) {
		s := apply(t, WithMounts(nil, pod, false, false, nil))
		for dst, src := range map[string]string{
			"/etc/hostname": "/var/lib/pier/pods/pod1/hostname", "/etc/hosts": "/var/lib/pier/pods/pod1/hosts",
			"/etc/resolv.conf": "/var/lib/pier/pods/pod1/resolv.conf",
		} {
			m := mountAt(s, dst)
			if m == nil || m.Source != src || m.Type != "bind" || !slices.Equal(m.Options, []string{"rbind", "rprivate", "rw"}) {
				t.Errorf("%s: %+v", dst, m)
			}
		}
		s = apply(t, WithMounts(nil, pod, true, false, nil))
		if m := mountAt(s, "/etc/resolv.conf"); !slices.Contains(m.Options, "ro") {
			t.Errorf("pod file writable with a read-only root: %+v", m)
		}
	})
	t.Run("CRI mounts", func(t *testing.T) {
		s := apply(t, WithDefaultMounts(pod))
		mounts := []*runtimeapi.Mount{
			{ContainerPath: "/data/cache", HostPath: "/h/cache", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
			{ContainerPath: "/data", HostPath: "/h/data", Readonly: true},
			{ContainerPath: "/etc/hosts", HostPath: "/kubelet/etc-hosts"},
			{ContainerPath: "/dev/shm/", HostPath: "/h/shm"},
		}
		if err := WithMounts(mounts, pod, false, false, nil)(s); err != nil {
			t.Fatal(err)
		}
		var order []string
		for _, m := range s.Mounts {
			order = append(order, m.Destination)
		}
		if i, j := slices.Index(order, "/data"), slices.Index(order, "/data/cache"); i < 0 || j < i {
			t.Errorf("mount order %v: /data must come before /data/cache", order)
		}
		if m := mountAt(s, "/data"); !slices.Equal(m.Options, []string{"rbind", "rprivate", "ro"}) {
			t.Errorf("/data = %+v", m)
		}
		if m := mountAt(s, "/data/cache"); !slices.Equal(m.Options, []string{"rbind", "rslave", "rw"}) {
			t.Errorf("/data/cache = %+v", m)
		}
		if s.Linux.RootfsPropagation != "rslave" {
			t.Errorf("rootfs propagation = %q", s.Linux.RootfsPropagation)
		}
		if m := mountAt(s, "/etc/hosts"); m.Source != "/kubelet/etc-hosts" || strings.Count(strings.Join(order, " "), "/etc/hosts") != 1 {
			t.Errorf("/etc/hosts: %+v in %v", m, order)
		}
		if mountAt(s, "/dev/shm") != nil || mountAt(s, "/dev/shm/").Source != "/h/shm" {
			t.Errorf("the default /dev/shm was not replaced: %v", order)
		}
	})
	t.Run("bidirectional", func(t *testing.T) {
		s := apply(t, WithMounts([]*runtimeapi.Mount{
			{ContainerPath: "/a", HostPath: "/a", Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
			{ContainerPath: "/b", HostPath: "/b", Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
		}, pod, false, false, nil))
		if m := mountAt(s, "/a"); !slices.Contains(m.Options, "rshared") || s.Linux.RootfsPropagation != "rshared" {
			t.Errorf("/a = %+v, root propagation %q", m, s.Linux.RootfsPropagation)
		}
	})
	t.Run("dev replaces everything under dev", func(t *testing.T) {
		s := apply(t, WithDefaultMounts(pod))
		if err := WithMounts([]*runtimeapi.Mount{{ContainerPath: "/dev", HostPath: "/dev"}}, pod, false, false, nil)(s); err != nil {
			t.Fatal(err)
		}
		for _, m := range s.Mounts {
			if strings.HasPrefix(m.Destination, "/dev/") {
				t.Errorf("default %s kept under a CRI /dev", m.Destination)
			}
		}
	})
	t.Run("recursive read-only", func(t *testing.T) {
		rro := []*runtimeapi.Mount{{ContainerPath: "/r", HostPath: "/r", Readonly: true, RecursiveReadOnly: true}}
		s := apply(t, WithMounts(rro, pod, false, true, nil))
		if m := mountAt(s, "/r"); !slices.Contains(m.Options, "rro") {
			t.Errorf("/r = %+v", m)
		}
		err := WithMounts(rro, pod, false, false, nil)(&specs.Spec{})
		if err == nil || !strings.Contains(err.Error(), "does not support recursive read-only") {
			t.Errorf("rro on a runtime without it: %v", err)
		}
	})
	for name, m := range map[string]*runtimeapi.Mount{
		"image volume":        {ContainerPath: "/img", Image: &runtimeapi.ImageSpec{Image: "busybox"}},
		"no host path":        {ContainerPath: "/x"},
		"rro needs ro":        {ContainerPath: "/r", HostPath: "/r", RecursiveReadOnly: true},
		"rro needs private":   {ContainerPath: "/r", HostPath: "/r", Readonly: true, RecursiveReadOnly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL},
		"unknown propagation": {ContainerPath: "/r", HostPath: "/r", Propagation: 9},
	} {
		if err := WithMounts([]*runtimeapi.Mount{m}, pod, false, true, nil)(&specs.Spec{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPrepareMounts(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "termination-log")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "a", "b")
	cfg := &runtimeapi.ContainerConfig{Mounts: []*runtimeapi.Mount{
		{ContainerPath: "/dev/termination-log", HostPath: file},
		{ContainerPath: "/data", HostPath: missing},
	}}
	if err := PrepareMounts(cfg); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(missing); err != nil || !fi.IsDir() {
		t.Errorf("missing host path not created as a directory: %v", err)
	}
	if fi, err := os.Stat(file); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("existing file changed: %v", err)
	}
}

func TestDeviceLookup(t *testing.T) {
	fi, err := os.Stat("/dev/null")
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Skip("no /dev/null character device")
	}
	devs, err := LookupDevices([]*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/mynull", Permissions: "rw"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 {
		t.Fatalf("devices = %+v", devs)
	}
	d := devs[0]
	if d.Path != "/dev/mynull" || d.Type != "c" || d.Major != 1 || d.Minor != 3 || d.Access != "rw" || d.FileMode == nil || *d.FileMode&0o666 != 0o666 {
		t.Errorf("device = %+v", d)
	}
	for name, dev := range map[string]*runtimeapi.Device{
		"bad permissions": {HostPath: "/dev/null", ContainerPath: "/dev/x", Permissions: "rwx"},
		"missing":         {HostPath: "/dev/does-not-exist", ContainerPath: "/dev/x"},
		"not a device":    {HostPath: "/etc/hostname", ContainerPath: "/dev/x"},
	} {
		if _, err := LookupDevices([]*runtimeapi.Device{dev}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestDeviceOpt(t *testing.T) {
	mode := os.FileMode(0o666)
	dev := HostDevice{LinuxDevice: specs.LinuxDevice{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: &mode}, Access: "rwm"}
	s := apply(t, WithBase())
	if err := WithDevices([]HostDevice{dev, dev})(s); err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.Devices) != 1 || s.Linux.Devices[0].Path != "/dev/fuse" {
		t.Errorf("devices = %+v", s.Linux.Devices)
	}
	rules := s.Linux.Resources.Devices
	if len(rules) != 3 || rules[0].Allow || !rules[1].Allow || *rules[1].Major != 10 || *rules[1].Minor != 229 || rules[1].Type != "c" || rules[1].Access != "rwm" {
		t.Errorf("device rules = %+v", rules)
	}
}

func TestResourceOpt(t *testing.T) {
	res := &runtimeapi.LinuxContainerResources{
		CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 256 << 20,
		CpusetCpus: "0-1", CpusetMems: "0",
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 4 << 20}},
		Unified:        map[string]string{"memory.high": "200000000"},
	}
	s := apply(t, WithResources(res))
	r := s.Linux.Resources
	if *r.CPU.Period != 100000 || *r.CPU.Quota != 50000 || *r.CPU.Shares != 512 || r.CPU.Cpus != "0-1" || r.CPU.Mems != "0" {
		t.Errorf("cpu = %+v", r.CPU)
	}
	if *r.Memory.Limit != 256<<20 || r.Memory.Swap != nil {
		t.Errorf("memory = %+v", r.Memory)
	}
	if len(r.HugepageLimits) != 1 || r.HugepageLimits[0] != (specs.LinuxHugepageLimit{Pagesize: "2MB", Limit: 4 << 20}) {
		t.Errorf("hugepages = %+v", r.HugepageLimits)
	}
	if r.Unified["memory.high"] != "200000000" {
		t.Errorf("unified = %v", r.Unified)
	}
	res.Unified["memory.high"] = "1"
	if r.Unified["memory.high"] != "200000000" {
		t.Error("unified map shared with the config")
	}
	if s := apply(t, WithResources(&runtimeapi.LinuxContainerResources{MemorySwapLimitInBytes: 1 << 30})); *s.Linux.Resources.Memory.Swap != 1<<30 {
		t.Errorf("swap = %v", s.Linux.Resources.Memory)
	}
	if s := apply(t, WithResources(&runtimeapi.LinuxContainerResources{})); s.Linux.Resources.CPU != nil || s.Linux.Resources.Memory != nil {
		t.Errorf("empty resources = %+v", s.Linux.Resources)
	}
	if s := apply(t, WithResources(nil)); s.Linux != nil {
		t.Errorf("nil resources = %+v", s.Linux)
	}
}

// TestResourcesFit: the limits kubelet sends, on a node like this machine
// (hybrid, hugetlb only on the v2 hierarchy), lose only the hugepage
// limits; unified keys there are invalid.
func TestResourcesFit(t *testing.T) {
	node := &cgroup.Node{Mode: cgroups.Hybrid, Driver: cgroup.Cgroupfs, Controllers: map[string]bool{"cpu": true, "cpuset": true, "memory": true, "pids": true, "swap": true}}
	res := &runtimeapi.LinuxContainerResources{
		CpuPeriod: 100000, CpuQuota: 50000, CpuShares: 512, MemoryLimitInBytes: 256 << 20, MemorySwapLimitInBytes: 256 << 20,
		HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB"}, {PageSize: "1GB"}},
	}
	r := apply(t, WithResources(res), WithResourcesFit(node)).Linux.Resources
	if r.HugepageLimits != nil || *r.CPU.Quota != 50000 || *r.Memory.Limit != 256<<20 || *r.Memory.Swap != 256<<20 {
		t.Errorf("fitted resources = %+v", r)
	}
	res.Unified = map[string]string{"memory.high": "1"}
	if err := WithResourcesFit(node)(apply(t, WithResources(res))); !errors.Is(err, cgroup.ErrInvalid) {
		t.Errorf("unified keys on a hybrid node: %v", err)
	}
	if s := apply(t, WithResourcesFit(nil), WithResourcesFit(node)); s.Linux != nil {
		t.Errorf("fit without resources = %+v", s.Linux)
	}
}

func TestCgroupNodeOpt(t *testing.T) {
	v2 := &cgroup.Node{Mode: cgroups.Unified, Driver: cgroup.Systemd}
	s := &specs.Spec{Annotations: map[string]string{"org.systemd.property.MemoryMax": "uint64 1", "app": "web"}, Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{{Type: specs.MountNamespace}}}}
	if err := WithCgroupNode(v2)(s); err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.Namespaces) != 2 || s.Linux.Namespaces[1].Type != specs.CgroupNamespace {
		t.Errorf("namespaces on cgroup v2 = %+v", s.Linux.Namespaces)
	}
	if _, ok := s.Annotations["org.systemd.property.MemoryMax"]; ok || s.Annotations["app"] != "web" || s.Annotations["org.systemd.property.TimeoutStopUSec"] != scopeStopTimeout {
		t.Errorf("annotations with the systemd driver = %v", s.Annotations)
	}
	hybrid := &cgroup.Node{Mode: cgroups.Hybrid, Driver: cgroup.Cgroupfs}
	s = &specs.Spec{Annotations: map[string]string{"org.systemd.property.CPUQuota": "x"}}
	if err := WithCgroupNode(hybrid)(s); err != nil {
		t.Fatal(err)
	}
	if s.Linux != nil || len(s.Annotations) != 0 {
		t.Errorf("hybrid cgroupfs node: namespaces %v, annotations %v", s.Linux.Namespaces, s.Annotations)
	}
}

func TestResourceOOMScoreAdj(t *testing.T) {
	for _, tc := range []struct {
		req, floor, want int
		noted            bool
	}{
		{req: 1000, floor: -999, want: 1000},
		{req: -997, floor: -999, want: -997},
		{req: -999, floor: -500, want: -500, noted: true},
		{req: 5000, floor: 0, want: 1000},
	} {
		var notes []string
		s := apply(t, WithOOMScoreAdj(&runtimeapi.LinuxContainerResources{OomScoreAdj: int64(tc.req)}, tc.floor, func(n string) { notes = append(notes, n) }))
		if *s.Process.OOMScoreAdj != tc.want || (len(notes) > 0) != tc.noted {
			t.Errorf("oom_score_adj %d (floor %d) = %d, notes %q; want %d", tc.req, tc.floor, *s.Process.OOMScoreAdj, notes, tc.want)
		}
	}
	if s := apply(t, WithOOMScoreAdj(nil, 0, nil)); s.Process != nil {
		t.Error("oom_score_adj set without resources")
	}
}

func TestOptPrivileged(t *testing.T) {
	s := apply(t, WithBase())
	for _, o := range []SpecOpt{WithDefaultMounts(testPod()), WithMaskedPaths([]string{"/proc/kcore"}, []string{"/proc/sys"}), WithDefaultCapabilities()} {
		if err := o(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := WithPrivileged(false, knownCapabilities, nil)(s); err != nil || s.Linux.MaskedPaths == nil {
		t.Fatalf("unprivileged changed the spec: %v", err)
	}
	hostDevs := []specs.LinuxDevice{{Path: "/dev/null", Type: "c", Major: 1, Minor: 3}, {Path: "/dev/sda", Type: "b", Major: 8}}
	s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/null", Type: "c", Major: 1, Minor: 3}}
	if err := WithPrivileged(true, knownCapabilities, hostDevs)(s); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Process.Capabilities.Bounding, knownCapabilities) || !slices.Equal(s.Process.Capabilities.Effective, knownCapabilities) {
		t.Errorf("capabilities = %v", s.Process.Capabilities.Bounding)
	}
	if s.Linux.MaskedPaths != nil || s.Linux.ReadonlyPaths != nil {
		t.Errorf("masked %v, readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if d := s.Linux.Resources.Devices; len(d) != 1 || !d[0].Allow || d[0].Access != "rwm" {
		t.Errorf("device rules = %+v", d)
	}
	for _, dst := range []string{"/sys", "/sys/fs/cgroup"} {
		if o := mountAt(s, dst).Options; slices.Contains(o, "ro") || !slices.Contains(o, "rw") {
			t.Errorf("%s options %v", dst, o)
		}
	}
	if len(s.Linux.Devices) != 2 || s.Linux.Devices[1].Path != "/dev/sda" {
		t.Errorf("devices = %+v", s.Linux.Devices)
	}
}

func TestOptSecurityProfiles(t *testing.T) {
	node := mustConfine(t)
	if node.AppArmorEnabled {
		t.Skip("the test expects a node without AppArmor")
	}
	base := func() *specs.Spec { return apply(t, WithBase(), WithDefaultCapabilities()) }
	t.Run("nil node applies nothing", func(t *testing.T) {
		sc := &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{}}
		if s := apply(t, WithSecurityProfiles(sc, nil, nil)); s.Linux != nil {
			t.Errorf("spec %+v", s)
		}
	})
	t.Run("runtime default", func(t *testing.T) {
		sc := &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}}
		s := base()
		if err := WithSecurityProfiles(sc, node, nil)(s); err != nil {
			t.Fatal(err)
		}
		if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno || s.Process.ApparmorProfile != "" {
			t.Errorf("seccomp %+v, apparmor %q", s.Linux.Seccomp, s.Process.ApparmorProfile)
		}
	})
	t.Run("unconfined", func(t *testing.T) {
		s := base()
		if err := WithSecurityProfiles(&runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "unconfined"}, node, nil)(s); err != nil || s.Linux.Seccomp != nil {
			t.Errorf("seccomp %+v, err %v", s.Linux.Seccomp, err)
		}
	})
	t.Run("AppArmor profile on a node without AppArmor", func(t *testing.T) {
		sc := &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "k8s-x"}}
		if err := WithSecurityProfiles(sc, node, nil)(base()); !errors.Is(err, confine.ErrUnsupported) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("SELinux label on a node without SELinux", func(t *testing.T) {
		var notes []string
		sc := &runtimeapi.LinuxContainerSecurityContext{SelinuxOptions: &runtimeapi.SELinuxOption{Level: "s0:c1,c2"}}
		if err := WithSecurityProfiles(sc, node, func(n string) { notes = append(notes, n) })(base()); err != nil || len(notes) != 1 {
			t.Errorf("err %v, notes %q", err, notes)
		}
	})
}

func TestOptReadonlySysfs(t *testing.T) {
	s := apply(t, WithMaskedPaths(nil, []string{"/proc/sys"}), WithReadonlySysfs(false))
	if !slices.Equal(s.Linux.ReadonlyPaths, []string{"/proc/sys", "/sys"}) {
		t.Errorf("read-only paths = %v", s.Linux.ReadonlyPaths)
	}
	if s := apply(t, WithReadonlySysfs(true)); s.Linux != nil && slices.Contains(s.Linux.ReadonlyPaths, "/sys") {
		t.Error("privileged: /sys read-only")
	}
}

func TestOptAmbientCapabilities(t *testing.T) {
	s := apply(t, WithBase(), WithDefaultCapabilities(), WithAmbientCapabilities(&runtimeapi.Capability{AddAmbientCapabilities: []string{"net_bind_service", "CAP_NET_ADMIN"}}))
	c := s.Process.Capabilities
	for name, set := range map[string][]string{"ambient": c.Ambient, "inheritable": c.Inheritable, "bounding": c.Bounding, "permitted": c.Permitted, "effective": c.Effective} {
		if !slices.Contains(set, "CAP_NET_BIND_SERVICE") || !slices.Contains(set, "CAP_NET_ADMIN") {
			t.Errorf("%s = %v", name, set)
		}
	}
	if len(c.Ambient) != 2 {
		t.Errorf("ambient = %v", c.Ambient)
	}
	if err := WithAmbientCapabilities(&runtimeapi.Capability{AddAmbientCapabilities: []string{"NOPE"}})(s); err == nil {
		t.Error("unknown ambient capability accepted")
	}
}

func TestHostDevices(t *testing.T) {
	devs, err := HostDevices()
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]specs.LinuxDevice{}
	for _, d := range devs {
		byPath[d.Path] = d
	}
	if d, ok := byPath["/dev/null"]; !ok || d.Type != "c" || d.Major != 1 || d.Minor != 3 {
		t.Errorf("/dev/null = %+v (%v)", d, ok)
	}
	for p := range byPath {
		if p == "/dev/console" || strings.HasPrefix(p, "/dev/pts/") || strings.HasPrefix(p, "/dev/shm/") {
			t.Errorf("%s listed", p)
		}
	}
}

func TestOptAnnotations(t *testing.T) {
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image:    &runtimeapi.ImageSpec{Image: "sha256:abc", UserSpecifiedImage: "nginx:1.27"},
		Annotations: map[string]string{
			"a": "b", annotationContainerType: "sandbox", "run.oci.handler": "krun", "run.oci.keep_original_groups": "1",
			"io.example/ok": "1",
		},
	}
	rt := &oci.Runtime{AllowedAnnotations: []string{"io.example/*", "a"}}
	s := apply(t, WithAnnotations(cfg, testPod(), rt.AllowedAnnotation))
	want := map[string]string{
		"a":                        "b",
		"io.example/ok":            "1",
		annotationContainerType:    "container",
		annotationSandboxID:        "pod1",
		annotationSandboxName:      "web",
		annotationSandboxNamespace: "default",
		annotationSandboxUID:       "uid-1",
		annotationContainerName:    "app",
		annotationImageName:        "nginx:1.27",
	}
	if !mapsEqual(s.Annotations, want) {
		t.Errorf("annotations = %v, want %v", s.Annotations, want)
	}
	var none *oci.Runtime
	if s := apply(t, WithAnnotations(cfg, testPod(), none.AllowedAnnotation)); s.Annotations["a"] != "" || s.Annotations["run.oci.handler"] != "" {
		t.Errorf("annotations copied without an allowlist: %v", s.Annotations)
	}
	cfg.Image.UserSpecifiedImage = ""
	if s := apply(t, WithAnnotations(cfg, testPod(), nil)); s.Annotations[annotationImageName] != "sha256:abc" {
		t.Errorf("image name = %q", s.Annotations[annotationImageName])
	}
}

func mustConfine(t *testing.T) *confine.Node {
	n, err := confine.Detect("")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func specInput(t *testing.T, rootfs string) SpecInput {
	hostDir := t.TempDir()
	return SpecInput{
		ID:     "c1",
		Pod:    testPod(),
		Rootfs: rootfs,
		Image: &v1.ConfigFile{Config: v1.Config{
			Entrypoint: []string{"/docker-entrypoint.sh"}, Cmd: []string{"nginx", "-g", "daemon off;"},
			Env: []string{"PATH=/usr/sbin:/usr/bin", "NGINX_VERSION=1.27"}, WorkingDir: "/usr/share/nginx", User: "user-defined-in-image",
		}},
		CgroupsPath:      "/kubepods/pod1/c1",
		OOMScoreAdjFloor: -500,
		Confine:          mustConfine(t),
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "nginx"},
			Image:    &runtimeapi.ImageSpec{Image: "docker.io/library/nginx:1.27"},
			Args:     []string{"nginx", "-T"},
			Envs:     []*runtimeapi.KeyValue{{Key: "NGINX_VERSION", Value: []byte("override")}},
			Mounts: []*runtimeapi.Mount{
				{ContainerPath: "/var/cache/nginx", HostPath: filepath.Join(hostDir, "cache")},
				{ContainerPath: "/etc/hosts", HostPath: filepath.Join(hostDir, "etc-hosts")},
			},
			Tty: true,
			Linux: &runtimeapi.LinuxContainerConfig{
				Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 128 << 20, CpuShares: 256, OomScoreAdj: -998},
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					RunAsGroup:         i64(3000),
					SupplementalGroups: []int64{4000},
					Capabilities:       &runtimeapi.Capability{DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"NET_BIND_SERVICE"}},
					ReadonlyRootfs:     true,
					NoNewPrivs:         true,
					MaskedPaths:        []string{"/proc/kcore"},
					Seccomp:            &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
				},
			},
			Annotations: map[string]string{"io.kubernetes.container.hash": "1234"},
		},
	}
}

func TestSpec(t *testing.T) {
	rootfs := writeRootfs(t, testPasswd, testGroup)
	in := specInput(t, rootfs)
	if err := PrepareMounts(in.Config); err != nil {
		t.Fatal(err)
	}
	s, notes, err := Spec(in)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version != "1.0.2" || s.Root.Path != "rootfs" || !s.Root.Readonly || s.Hostname != "web-0" || s.Linux.CgroupsPath != "/kubepods/pod1/c1" {
		t.Errorf("spec = %+v", s)
	}
	p := s.Process
	if want := []string{"/docker-entrypoint.sh", "nginx", "-T"}; !slices.Equal(p.Args, want) {
		t.Errorf("args = %q, want %q", p.Args, want)
	}
	if want := []string{"HOSTNAME=web-0", "PATH=/usr/sbin:/usr/bin", "NGINX_VERSION=override"}; !slices.Equal(p.Env, want) {
		t.Errorf("env = %q, want %q", p.Env, want)
	}
	if p.Cwd != "/usr/share/nginx" || !p.Terminal || !p.NoNewPrivileges {
		t.Errorf("process = %+v", p)
	}
	if want := (specs.User{UID: 1000, GID: 3000, AdditionalGids: []uint32{10, 3000, 4000, 50000}}); p.User.UID != want.UID || p.User.GID != want.GID || !slices.Equal(p.User.AdditionalGids, want.AdditionalGids) {
		t.Errorf("user = %+v, want %+v", p.User, want)
	}
	if !slices.Equal(p.Capabilities.Bounding, []string{"CAP_NET_BIND_SERVICE"}) {
		t.Errorf("capabilities = %+v", p.Capabilities)
	}
	if *p.OOMScoreAdj != -500 || *s.Linux.Resources.Memory.Limit != 128<<20 || *s.Linux.Resources.CPU.Shares != 256 {
		t.Errorf("oom %d, resources %+v", *p.OOMScoreAdj, s.Linux.Resources)
	}
	if len(p.Rlimits) != 1 || p.Rlimits[0].Type != "RLIMIT_NOFILE" {
		t.Errorf("rlimits = %+v", p.Rlimits)
	}
	if got := namespacesOf(s); len(got) != 5 || got[specs.NetworkNamespace] != "/run/pier/pods/pod1/ns/net" {
		t.Errorf("namespaces = %+v", s.Linux.Namespaces)
	}
	if m := mountAt(s, "/etc/hosts"); m == nil || !strings.HasSuffix(m.Source, "etc-hosts") {
		t.Errorf("/etc/hosts = %+v", m)
	}
	if m := mountAt(s, "/etc/resolv.conf"); m == nil || !slices.Contains(m.Options, "ro") {
		t.Errorf("/etc/resolv.conf = %+v", m)
	}
	if m := mountAt(s, "/var/cache/nginx"); m == nil {
		t.Error("no /var/cache/nginx mount")
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") {
		t.Errorf("masked = %v", s.Linux.MaskedPaths)
	}
	if s.Annotations["io.kubernetes.container.hash"] != "" || s.Annotations[annotationContainerName] != "nginx" {
		t.Errorf("annotations = %v", s.Annotations)
	}
	if s.Linux.Seccomp == nil || s.Linux.Seccomp.DefaultAction != specs.ActErrno {
		t.Errorf("seccomp = %+v", s.Linux.Seccomp)
	}
	if len(notes) != 1 { // the oom_score_adj clamp
		t.Errorf("notes = %q", notes)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"ociVersion":"1.0.2"`) {
		t.Errorf("config.json: %s", b)
	}
}

func TestSpecDevices(t *testing.T) {
	if fi, err := os.Stat("/dev/null"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Skip("no /dev/null character device")
	}
	in := specInput(t, writeRootfs(t, testPasswd, testGroup))
	in.Config.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/xnull", Permissions: "rwm"}}
	s, _, err := Spec(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.Devices) != 1 || s.Linux.Devices[0].Path != "/dev/xnull" || len(s.Linux.Resources.Devices) != 2 {
		t.Errorf("devices %+v, rules %+v", s.Linux.Devices, s.Linux.Resources.Devices)
	}
}

func TestSpecErrors(t *testing.T) {
	rootfs := writeRootfs(t, testPasswd, testGroup)
	for name, change := range map[string]func(*SpecInput){
		"no command":       func(in *SpecInput) { in.Config.Args, in.Image = nil, nil },
		"unknown username": func(in *SpecInput) { in.Image.Config.User = "nosuch" },
		"no pod":           func(in *SpecInput) { in.Pod = nil },
		"no config":        func(in *SpecInput) { in.Config = nil },
		"missing rootfs":   func(in *SpecInput) { in.Rootfs = filepath.Join(rootfs, "nope") },
	} {
		in := specInput(t, rootfs)
		change(&in)
		if _, _, err := Spec(in); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// A symbolic link /etc/passwd -> <an absolute host path> is resolved inside
// the root file system: the host's file is never read.
func TestSpecSymlinkedPasswd(t *testing.T) {
	host := t.TempDir()
	hostPasswd := filepath.Join(host, "passwd")
	if err := os.WriteFile(hostPasswd, []byte("user-defined-in-image:x:4242:4242::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rootfs := writeRootfs(t, "", testGroup)
	if err := os.Symlink(hostPasswd, filepath.Join(rootfs, "etc", "passwd")); err != nil {
		t.Fatal(err)
	}
	in := specInput(t, rootfs)
	s, _, err := Spec(in)
	if err == nil {
		t.Fatalf("the image's user resolved to uid %d through a link out of the root file system", s.Process.User.UID)
	}
	if !strings.Contains(err.Error(), "no user") {
		t.Errorf("error = %v", err)
	}
	// A numeric user needs no passwd file.
	in.Image.Config.User = "1000"
	s, _, err = Spec(in)
	if err != nil {
		t.Fatal(err)
	}
	if u := s.Process.User; u.UID != 1000 || u.GID != 3000 {
		t.Errorf("user = %+v", u)
	}
}
