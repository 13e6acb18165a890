package container

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/internal/mountinfo"
	"github.com/pier-runtime/pier/sandbox"
)

var podMapping = []sandbox.IDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}

// usernsPod is testPod with a user namespace of its own.
func usernsPod() *sandbox.Sandbox {
	pod := testPod()
	pod.Config.UserNamespace = &sandbox.UserNamespace{Mode: "POD", UIDs: podMapping, GIDs: podMapping}
	pod.Namespaces["user"] = "/run/pier/pods/pod1/ns/user"
	return pod
}

func TestOptNamespacesUserNamespace(t *testing.T) {
	criMapping := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 200000, Length: 65536}}
	for _, opts := range []*runtimeapi.UserNamespace{nil, {Mode: runtimeapi.NamespaceMode_POD}, {Mode: runtimeapi.NamespaceMode_POD, Uids: criMapping, Gids: criMapping}} {
		s := apply(t, WithNamespaces(usernsPod(), &runtimeapi.NamespaceOption{UsernsOptions: opts}, 0))
		if ns := namespacesOf(s); ns[specs.UserNamespace] != "/run/pier/pods/pod1/ns/user" || ns[specs.NetworkNamespace] == "" {
			t.Errorf("%v: namespaces %+v", opts, s.Linux.Namespaces)
		}
		want := []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
		if !slices.Equal(s.Linux.UIDMappings, want) || !slices.Equal(s.Linux.GIDMappings, want) {
			t.Errorf("%v: mappings %v %v", opts, s.Linux.UIDMappings, s.Linux.GIDMappings)
		}
	}
	// The host's user namespace: no user namespace in the spec.
	s := apply(t, WithNamespaces(testPod(), &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}}, 0))
	if _, ok := namespacesOf(s)[specs.UserNamespace]; ok || s.Linux.UIDMappings != nil {
		t.Errorf("host user namespace: %+v", s.Linux)
	}
	other := []*runtimeapi.IDMapping{{ContainerId: 0, HostId: 300000, Length: 65536}}
	for name, tc := range map[string]struct {
		pod  *sandbox.Sandbox
		opts *runtimeapi.UserNamespace
	}{
		"POD in a host pod":        {testPod(), &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD}},
		"mappings in a host pod":   {testPod(), &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE, Uids: criMapping}},
		"NODE in a userns pod":     {usernsPod(), &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}},
		"CONTAINER":                {usernsPod(), &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}},
		"other mappings":           {usernsPod(), &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: other, Gids: other}},
		"pod without a pinned one": {func() *sandbox.Sandbox { p := usernsPod(); delete(p.Namespaces, "user"); return p }(), nil},
	} {
		if err := WithNamespaces(tc.pod, &runtimeapi.NamespaceOption{UsernsOptions: tc.opts}, 0)(&specs.Spec{}); err == nil || !strings.Contains(err.Error(), "user namespace") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCheckReachable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to own the directories")
	}
	top := t.TempDir()
	os.Chmod(filepath.Dir(top), 0o711) // testing's, 0700
	os.Chmod(top, 0o700)
	dir := filepath.Join(top, "a", "b")
	os.MkdirAll(dir, 0o711)
	if err := checkReachable(dir, 200000, 200000); err == nil || !strings.Contains(err.Error(), top+" (mode 0700") {
		t.Errorf("through a 0700 directory: %v", err)
	}
	os.Chmod(top, 0o710)
	os.Chown(top, 0, 200000)
	if err := checkReachable(dir, 200000, 200000); err != nil {
		t.Errorf("through a 0710 directory of the group: %v", err)
	}
	if err := checkReachable(dir, 300000, 300000); err == nil {
		t.Error("another group got through")
	}
}

// TestUsernsRootfsAndMounts: a container of a userns pod gets an overlay
// of idmapped layers, an upper directory of the pod's root and idmapped
// clones of its bind mount sources, in directories the namespace's root
// can pass through; destroy's UnmountUnder leaves no mount.
func TestUsernsRootfsAndMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("idmapped mounts need root")
	}
	maps := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 200000, Size: 65536}}
	sleep := exec.Command("sleep", "60")
	sleep.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER, UidMappings: maps, GidMappings: maps}
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleep.Process.Kill(); sleep.Wait() }()
	top := t.TempDir()
	os.Chmod(filepath.Dir(top), 0o711) // testing's, 0700
	os.Chmod(top, 0o711)
	images, err := image.New(image.Options{Root: filepath.Join(top, "images")})
	if err != nil {
		t.Fatal(err)
	}
	m := &Manager{opts: Options{State: filepath.Join(top, "state"), Root: filepath.Join(top, "root"), Images: images}}
	os.Mkdir(m.opts.State, 0o711) // as New makes it
	c := &Container{ID: "c1", Rootfs: filepath.Join(m.bundle("c1"), "rootfs"), ChainIDs: []string{"sha256:1"}}
	t.Cleanup(func() {
		if err := mountinfo.UnmountUnder(m.stateDir(c.ID)); err != nil {
			t.Error(err)
		}
	})
	for _, d := range []string{c.Rootfs, filepath.Join(m.dir(c.ID), "upper"), filepath.Join(m.dir(c.ID), "work")} {
		os.MkdirAll(d, 0o711)
	}
	layer := images.LayerDir(c.ChainIDs[0])
	os.MkdirAll(layer, 0o755)
	os.WriteFile(filepath.Join(layer, "root"), nil, 0o644)
	os.WriteFile(filepath.Join(layer, "user"), nil, 0o644)
	os.Chown(filepath.Join(layer, "user"), 1000, 1000)
	pod := usernsPod()
	pod.Namespaces["user"] = fmt.Sprintf("/proc/%d/ns/user", sleep.Process.Pid)
	if err := m.mountRootfs(c, pod); err != nil {
		t.Fatal(err)
	}
	owner := func(path string) string {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d:%d", st.Uid, st.Gid)
	}
	for path, want := range map[string]string{c.Rootfs: "200000:200000", filepath.Join(c.Rootfs, "root"): "200000:200000", filepath.Join(c.Rootfs, "user"): "201000:201000", filepath.Join(layer, "root"): "0:0"} {
		if got := owner(path); got != want {
			t.Errorf("%s owned by %s, want %s", path, got, want)
		}
	}
	if points := mountsAt(t, m.stateDir(c.ID)); !slices.Equal(points, []string{c.Rootfs}) {
		t.Errorf("mounts after the root file system's: %v, want it alone", points)
	}

	vol := filepath.Join(top, "vol")
	os.Mkdir(vol, 0o755)
	hosts := filepath.Join(top, "hosts")
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n"), 0o644)
	spec := &specs.Spec{Mounts: []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/data", Type: "bind", Source: vol, Options: []string{"rbind", "rw"}},
		{Destination: "/etc/hosts", Type: "bind", Source: hosts, Options: []string{"rbind", "ro"}},
		{Destination: "/host/sys", Type: "bind", Source: "/sys/kernel", Options: []string{"bind", "ro"}},
	}}
	notes, err := m.prepareUserNamespace(c, pod, spec)
	if err != nil {
		t.Fatal(err)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "/host/sys") {
		t.Errorf("notes %q, want one for the sysfs mount", notes)
	}
	for i, mnt := range spec.Mounts[1:3] {
		if !strings.HasPrefix(mnt.Source, filepath.Join(m.stateDir(c.ID), usernsDir)+"/") {
			t.Errorf("mount %d source %s, not a clone", i+1, mnt.Source)
		}
		if got := owner(mnt.Source); got != "200000:200000" {
			t.Errorf("%s owned by %s, want 200000:200000", mnt.Source, got)
		}
	}
	if spec.Mounts[0].Source != "proc" {
		t.Errorf("a proc mount was changed: %+v", spec.Mounts[0])
	}
	if _, err := os.Stat(filepath.Join(spec.Mounts[3].Source, "mm")); err != nil {
		t.Errorf("the sysfs clone: %v", err)
	}
	for _, d := range []string{m.stateDir(c.ID), m.bundle(c.ID), filepath.Join(m.stateDir(c.ID), usernsDir)} {
		fi, err := os.Stat(d)
		if err != nil || fi.Mode().Perm() != 0o710 || fi.Sys().(*syscall.Stat_t).Gid != 200000 {
			t.Errorf("%s: %v %v, want 0710 with group 200000", d, fi.Mode(), err)
		}
	}
	if err := mountinfo.UnmountUnder(m.stateDir(c.ID)); err != nil {
		t.Fatal(err)
	}
	if points := mountsAt(t, top); len(points) > 0 {
		t.Errorf("mounts left: %v", points)
	}
	if b, err := os.ReadFile(hosts); err != nil || len(b) == 0 {
		t.Errorf("the source is gone: %v", err)
	}
}

func mountsAt(t *testing.T, dir string) []string {
	t.Helper()
	points, err := mountinfo.Under(dir)
	if err != nil {
		t.Fatal(err)
	}
	return points
}
