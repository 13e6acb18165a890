package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// initStatus returns the fields of /proc/1/status of a running container
// (its own init, in its own PID namespace), read from inside it.
func initStatus(t *testing.T, p *testenv.Pierd, id string) map[string]string {
	t.Helper()
	out := execOut(t, p, id, "cat", "/proc/1/status")
	fields := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			fields[k] = strings.TrimSpace(v)
		}
	}
	return fields
}

// ownPIDPod runs a pod whose containers each have a PID namespace of their
// own, as kubelet's pods do: /proc/1 in a container is its init.
func ownPIDPod(t *testing.T, p *testenv.Pierd, name string) (string, *runtimeapi.PodSandboxConfig) {
	t.Helper()
	pod := podConfig(name)
	pod.LogDirectory = t.TempDir()
	pod.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}}
	return runPod(t, p, pod), pod
}

// execOut runs a command in a container and returns its standard output
// and error; a non-zero exit fails the test.
func execOut(t *testing.T, p *testenv.Pierd, id string, cmd ...string) string {
	t.Helper()
	resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: cmd, Timeout: 20})
	if err != nil || resp.ExitCode != 0 {
		t.Fatalf("exec %q: %v, exit %d: %s%s", cmd, err, resp.GetExitCode(), resp.GetStdout(), resp.GetStderr())
	}
	return string(resp.Stdout) + string(resp.Stderr)
}

// TestConfinement checks, from inside running containers, that what the
// security context asks for is what the container gets.
func TestConfinement(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := ownPIDPod(t, p, "confine")
	run := func(name string, sc *runtimeapi.LinuxContainerSecurityContext) string {
		cfg := containerConfig(name, "sleep", "1000")
		cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: sc}
		return startContainer(t, p, podID, pod, cfg)
	}
	// unshare(CLONE_NEWUSER) needs no capability, and the default seccomp
	// profile blocks it for a container without CAP_SYS_ADMIN.
	unshare := func(id string) (*runtimeapi.ExecSyncResponse, error) {
		return p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"unshare", "-U", "true"}, Timeout: 20})
	}

	t.Run("runtime default seccomp", func(t *testing.T) {
		id := run("seccomp-default", &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}})
		if st := initStatus(t, p, id); st["Seccomp"] != "2" {
			t.Errorf("Seccomp: %q, want 2 (filter)", st["Seccomp"])
		}
		resp, err := unshare(id)
		if err != nil || resp.ExitCode == 0 || !strings.Contains(string(resp.Stderr), "Operation not permitted") {
			t.Errorf("unshare -U under the default profile: %v, exit %d, %s", err, resp.GetExitCode(), resp.GetStderr())
		}
	})
	t.Run("unconfined", func(t *testing.T) {
		id := run("seccomp-unconfined", nil)
		if st := initStatus(t, p, id); st["Seccomp"] != "0" {
			t.Errorf("Seccomp: %q, want 0", st["Seccomp"])
		}
		if resp, err := unshare(id); err != nil || resp.ExitCode != 0 {
			t.Errorf("unshare -U unconfined: %v, exit %d, %s", err, resp.GetExitCode(), resp.GetStderr())
		}
	})
	t.Run("localhost seccomp", func(t *testing.T) {
		profile := filepath.Join(t.TempDir(), "deny-chmod.json")
		if err := os.WriteFile(profile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmodat","fchmodat2"],"action":"SCMP_ACT_ERRNO"}]}`), 0o600); err != nil {
			t.Fatal(err)
		}
		id := run("seccomp-localhost", &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: profile}})
		resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"chmod", "700", "/tmp"}, Timeout: 20})
		if err != nil || resp.ExitCode == 0 || !strings.Contains(string(resp.Stderr), "Operation not permitted") {
			t.Errorf("chmod under a profile that denies it: %v, exit %d, %s", err, resp.GetExitCode(), resp.GetStderr())
		}
	})
	t.Run("capabilities and no_new_privs", func(t *testing.T) {
		def := initStatus(t, p, run("caps-default", nil))
		// containerd's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL
		// SETGID SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD
		// AUDIT_WRITE SETFCAP.
		if def["CapEff"] != "00000000a80425fb" || def["CapBnd"] != "00000000a80425fb" || def["NoNewPrivs"] != "0" {
			t.Errorf("default: CapEff %s, CapBnd %s, NoNewPrivs %s", def["CapEff"], def["CapBnd"], def["NoNewPrivs"])
		}
		none := initStatus(t, p, run("caps-none", &runtimeapi.LinuxContainerSecurityContext{
			Capabilities: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}}, NoNewPrivs: true,
		}))
		if none["CapEff"] != "0000000000000000" || none["CapBnd"] != "0000000000000000" || none["NoNewPrivs"] != "1" {
			t.Errorf("drop ALL: CapEff %s, CapBnd %s, NoNewPrivs %s", none["CapEff"], none["CapBnd"], none["NoNewPrivs"])
		}
		amb := initStatus(t, p, run("caps-ambient", &runtimeapi.LinuxContainerSecurityContext{
			RunAsUser:    &runtimeapi.Int64Value{Value: 1000},
			Capabilities: &runtimeapi.Capability{DropCapabilities: []string{"ALL"}, AddAmbientCapabilities: []string{"NET_BIND_SERVICE"}},
		}))
		if amb["CapAmb"] != "0000000000000400" || amb["CapEff"] != "0000000000000400" || amb["Uid"] == "" || !strings.HasPrefix(amb["Uid"], "1000") {
			t.Errorf("ambient NET_BIND_SERVICE as uid 1000: CapAmb %s, CapEff %s, Uid %s", amb["CapAmb"], amb["CapEff"], amb["Uid"])
		}
	})
	t.Run("masked and read-only", func(t *testing.T) {
		id := run("masked", &runtimeapi.LinuxContainerSecurityContext{
			ReadonlyRootfs: true,
			MaskedPaths:    []string{"/proc/keys", "/proc/timer_list"},
			ReadonlyPaths:  []string{"/proc/sys"},
		})
		// A masked file is /dev/null bound over it: character device 1,3.
		if out := execOut(t, p, id, "stat", "-c", "%t,%T", "/proc/keys"); strings.TrimSpace(out) != "1,3" {
			t.Errorf("/proc/keys is not masked: %q", out)
		}
		if out := execOut(t, p, id, "grep", " /sys ", "/proc/self/mounts"); !strings.Contains(out, " ro,") {
			t.Errorf("/sys is writable: %q", out)
		}
		for _, path := range []string{"/probe", "/proc/sys/kernel/domainname"} {
			resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "echo x > " + path}, Timeout: 20})
			if err != nil || resp.ExitCode == 0 || !strings.Contains(string(resp.Stderr), "Read-only file system") {
				t.Errorf("write to %s: %v, exit %d, %s", path, err, resp.GetExitCode(), resp.GetStderr())
			}
		}
	})
	t.Run("recursive read-only", func(t *testing.T) {
		// A host directory with a file system mounted below it: a plain
		// read-only bind leaves the one below writable, rro does not.
		dir := t.TempDir()
		sub := filepath.Join(dir, "sub")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Mount("e2e-rro", sub, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Unmount(sub, syscall.MNT_DETACH) })
		cfg := containerConfig("rro", "sleep", "1000")
		cfg.Mounts = []*runtimeapi.Mount{
			{ContainerPath: "/ro", HostPath: dir, Readonly: true},
			{ContainerPath: "/rro", HostPath: dir, Readonly: true, RecursiveReadOnly: true},
		}
		id := startContainer(t, p, podID, pod, cfg)
		execOut(t, p, id, "touch", "/ro/sub/plain-ro-leaves-submounts-writable")
		resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"touch", "/rro/sub/x"}, Timeout: 20})
		if err != nil || resp.ExitCode == 0 || !strings.Contains(string(resp.Stderr), "Read-only file system") {
			t.Errorf("write below a recursive read-only mount: %v, exit %d, %s", err, resp.GetExitCode(), resp.GetStderr())
		}
	})
	t.Run("unmasked", func(t *testing.T) {
		// kubelet's Unmasked proc mount sends no masked or read-only paths.
		id := run("unmasked", &runtimeapi.LinuxContainerSecurityContext{})
		if out := execOut(t, p, id, "stat", "-c", "%t,%T", "/proc/keys"); strings.TrimSpace(out) == "1,3" {
			t.Errorf("/proc/keys is masked though no masked paths were asked for")
		}
	})
	// After unprivileged containers of the same pod, which share its sysfs.
	t.Run("privileged", func(t *testing.T) {
		id := run("privileged", &runtimeapi.LinuxContainerSecurityContext{
			Privileged: true,
			Seccomp:    &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
		})
		st := initStatus(t, p, id)
		if st["Seccomp"] != "0" || st["CapEff"] == "00000000a80425fb" {
			t.Errorf("privileged: Seccomp %s, CapEff %s", st["Seccomp"], st["CapEff"])
		}
		// The host's devices, e.g. /dev/kmsg, which no unprivileged container has.
		if out := execOut(t, p, id, "stat", "-c", "%F %t,%T", "/dev/kmsg"); !strings.Contains(out, "character special file 1,b") {
			t.Errorf("/dev/kmsg in a privileged container: %q", out)
		}
		if out := execOut(t, p, id, "grep", " /sys ", "/proc/self/mounts"); !strings.Contains(out, " rw,") {
			t.Errorf("/sys is read-only in a privileged container: %q", out)
		}
	})
	t.Run("refused", func(t *testing.T) {
		for name, tc := range map[string]struct {
			sc   *runtimeapi.LinuxContainerSecurityContext
			code codes.Code
		}{
			"AppArmor profile without AppArmor": {&runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "k8s-deny-write"}}, codes.FailedPrecondition},
			"missing seccomp profile":           {&runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/nonexistent/profile.json"}}, codes.InvalidArgument},
			"unknown seccomp profile path":      {&runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "docker/strict"}, codes.InvalidArgument},
		} {
			if hostHasAppArmor() && strings.HasPrefix(name, "AppArmor") {
				continue
			}
			cfg := containerConfig("refused", "true")
			cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: tc.sc}
			_, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
			if status.Code(err) != tc.code {
				t.Errorf("%s: %v, want %v", name, err, tc.code)
			} else {
				t.Logf("%s: %v", name, err)
			}
		}
	})
}

func hostHasAppArmor() bool {
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	return err == nil && strings.TrimSpace(string(b)) == "Y"
}

// TestSeccompNodeDefault: with seccomp_default = "runtime/default", a
// container that asks for nothing gets the default profile, and one that
// asks for unconfined gets none.
func TestSeccompNodeDefault(t *testing.T) {
	p := startPierd(t, "[security]\nseccomp_default = \"runtime/default\"\n")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := ownPIDPod(t, p, "seccomp-node")
	for name, want := range map[string]string{"nothing-asked": "2", "unconfined": "0"} {
		cfg := containerConfig(name, "sleep", "1000")
		if name == "unconfined" {
			cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined},
			}}
		}
		if st := initStatus(t, p, startContainer(t, p, podID, pod, cfg)); st["Seccomp"] != want {
			t.Errorf("%s: Seccomp %q, want %s", name, st["Seccomp"], want)
		}
	}
}

// TestPodInitConfined: the init process of a pod whose containers share a
// PID namespace is PID 1 of that namespace, so its containers see it; one
// with CAP_SYS_PTRACE may open /proc/1/root. That must not lead to the
// host's file system.
func TestPodInitConfined(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	marker, err := os.CreateTemp("", "pier-e2e-marker-")
	if err != nil {
		t.Fatal(err)
	}
	marker.Close()
	defer os.Remove(marker.Name())
	podID, pod := podWithLogs(t, p, "podinit") // PID namespace POD: the CRI's default
	cfg := containerConfig("tracer", "sleep", "1000")
	cfg.Linux = &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"SYS_PTRACE"}},
	}}
	id := startContainer(t, p, podID, pod, cfg)
	if out := execOut(t, p, id, "cat", "/proc/1/cmdline"); !strings.Contains(out, "pod-init") {
		t.Fatalf("PID 1 is not the pod's init: %q", out)
	}
	resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"ls", "-la", "/proc/1/root" + marker.Name(), "/proc/1/cwd/"}, Timeout: 20})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(resp.Stdout), filepath.Base(marker.Name())) || strings.Contains(string(resp.Stdout), "etc") {
		t.Errorf("a container reaches the host's files through the pod init: %s", resp.Stdout)
	}
	st := initStatus(t, p, id)
	if st["CapEff"] != "0000000000000000" || st["CapPrm"] != "0000000000000000" || st["NoNewPrivs"] != "1" {
		t.Errorf("the pod init keeps privileges: CapPrm %s, CapEff %s, NoNewPrivs %s", st["CapPrm"], st["CapEff"], st["NoNewPrivs"])
	}
}
