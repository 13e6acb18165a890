package confine

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// testNode is a node with the given AppArmor profiles loaded (nil: no
// AppArmor) and no SELinux.
func testNode(t *testing.T, seccompDefault string, profiles []string) *Node {
	dir := t.TempDir()
	n := &Node{SeccompDefault: seccompDefault, profiles: filepath.Join(dir, "profiles"), selinux: filepath.Join(dir, "enforce")}
	if profiles != nil {
		n.AppArmorEnabled = true
		var b []byte
		for _, p := range profiles {
			b = append(b, p+" (enforce)\n"...)
		}
		if err := os.WriteFile(n.profiles, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

func capSpec(caps ...string) *specs.Spec {
	return &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps}}}
}

func writeProfile(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "profile.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// allows reports whether the profile has a rule allowing the system call.
func allows(p *specs.LinuxSeccomp, name string) bool {
	for _, s := range p.Syscalls {
		if s.Action == specs.ActAllow && slices.Contains(s.Names, name) && len(s.Args) == 0 {
			return true
		}
	}
	return false
}

func TestDetect(t *testing.T) {
	for _, v := range []string{"", "unconfined", "runtime/default"} {
		if _, err := Detect(v); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}
	if _, err := Detect("localhost/x"); err == nil {
		t.Error("seccomp default localhost/x accepted")
	}
}

func TestSeccomp(t *testing.T) {
	localhost := writeProfile(t, `{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod"],"action":"SCMP_ACT_ERRNO"}]}`)
	docker := writeProfile(t, `{"defaultAction":"SCMP_ACT_ERRNO","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]}],"syscalls":[{"name":"read","action":"SCMP_ACT_ALLOW"}]}`)
	lh := func(ref string) *runtimeapi.SecurityProfile {
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: ref}
	}
	type want int
	const (
		none want = iota
		def
		local
		dock
	)
	for name, tc := range map[string]struct {
		node string
		sc   *runtimeapi.LinuxContainerSecurityContext
		want want
	}{
		"nothing asked":                  {"unconfined", nil, none},
		"nothing asked, default on":      {"runtime/default", nil, def},
		"runtime default":                {"unconfined", &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{}}, def},
		"unconfined":                     {"runtime/default", &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}}, none},
		"localhost":                      {"unconfined", &runtimeapi.LinuxContainerSecurityContext{Seccomp: lh(localhost)}, local},
		"localhost, Docker's format":     {"unconfined", &runtimeapi.LinuxContainerSecurityContext{Seccomp: lh(docker)}, dock},
		"deprecated runtime/default":     {"unconfined", &runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "runtime/default"}, def},
		"deprecated docker/default":      {"unconfined", &runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "docker/default"}, def},
		"deprecated unconfined":          {"runtime/default", &runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "unconfined"}, none},
		"deprecated localhost":           {"unconfined", &runtimeapi.LinuxContainerSecurityContext{SeccompProfilePath: "localhost/" + localhost}, local},
		"new field wins":                 {"unconfined", &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{}, SeccompProfilePath: "unconfined"}, def},
		"privileged ignores the profile": {"runtime/default", &runtimeapi.LinuxContainerSecurityContext{Privileged: true, Seccomp: lh(localhost)}, none},
	} {
		n := testNode(t, tc.node, nil)
		p, err := n.Seccomp(tc.sc, capSpec("CAP_CHOWN"))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		switch tc.want {
		case none:
			if p != nil {
				t.Errorf("%s: got a filter", name)
			}
		case def:
			if p == nil || p.DefaultAction != specs.ActErrno || !allows(p, "read") || allows(p, "unshare") {
				t.Errorf("%s: not the default profile: %+v", name, p)
			}
		case local:
			if p == nil || p.DefaultAction != specs.ActAllow || len(p.Syscalls) != 1 || p.Syscalls[0].Names[0] != "chmod" {
				t.Errorf("%s: %+v", name, p)
			}
		case dock:
			if p == nil || !slices.Equal(p.Architectures, []specs.Arch{specs.ArchX86_64, specs.ArchX86}) || !allows(p, "read") {
				t.Errorf("%s: %+v", name, p)
			}
		}
	}
}

// The default profile allows what the container's capabilities grant.
func TestSeccompDefaultFollowsCapabilities(t *testing.T) {
	n := testNode(t, "runtime/default", nil)
	without, err := n.Seccomp(nil, capSpec("CAP_CHOWN"))
	if err != nil {
		t.Fatal(err)
	}
	with, err := n.Seccomp(nil, capSpec("CAP_CHOWN", "CAP_SYS_ADMIN"))
	if err != nil {
		t.Fatal(err)
	}
	if allows(without, "mount") || !allows(with, "mount") {
		t.Errorf("mount allowed without CAP_SYS_ADMIN: %v, with it: %v", allows(without, "mount"), allows(with, "mount"))
	}
	// A spec without capabilities is fine too.
	if _, err := n.Seccomp(nil, &specs.Spec{}); err != nil {
		t.Error(err)
	}
}

func TestSeccompRefused(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, make([]byte, maxProfileSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testNode(t, "unconfined", nil)
	for name, ref := range map[string]string{
		"missing":          filepath.Join(dir, "missing.json"),
		"malformed":        writeProfile(t, `{"defaultAction":`),
		"no defaultAction": writeProfile(t, `{"syscalls":[]}`),
		"relative":         "profiles/x.json",
		"unclean":          dir + "/../x.json",
		"a directory":      dir,
		"too large":        big,
	} {
		sc := &runtimeapi.LinuxContainerSecurityContext{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: ref}}
		if _, err := n.Seccomp(sc, capSpec()); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	for _, sc := range []*runtimeapi.LinuxContainerSecurityContext{
		{SeccompProfilePath: "docker/unknown"},
		{Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost}},
		{Seccomp: &runtimeapi.SecurityProfile{ProfileType: 7}},
	} {
		if _, err := n.Seccomp(sc, capSpec()); !errors.Is(err, ErrInvalid) {
			t.Errorf("%v: err = %v", sc, err)
		}
	}
}

func TestAppArmor(t *testing.T) {
	lh := func(ref string) *runtimeapi.SecurityProfile {
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: ref}
	}
	without := testNode(t, "", nil)
	with := testNode(t, "", []string{DefaultAppArmorProfile, "k8s-deny-write"})
	for name, tc := range map[string]struct {
		node *Node
		sc   *runtimeapi.LinuxContainerSecurityContext
		want string
		err  error
	}{
		"no AppArmor, nothing asked":    {without, nil, "", nil},
		"no AppArmor, runtime default":  {without, &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{}}, "", nil},
		"no AppArmor, unconfined":       {without, &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "unconfined"}, "", nil},
		"no AppArmor, localhost":        {without, &runtimeapi.LinuxContainerSecurityContext{Apparmor: lh("k8s-deny-write")}, "", ErrUnsupported},
		"no AppArmor, deprecated":       {without, &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "localhost/k8s-deny-write"}, "", ErrUnsupported},
		"nothing asked":                 {with, nil, DefaultAppArmorProfile, nil},
		"runtime default":               {with, &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{}}, DefaultAppArmorProfile, nil},
		"deprecated runtime default":    {with, &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "runtime/default"}, DefaultAppArmorProfile, nil},
		"privileged, nothing asked":     {with, &runtimeapi.LinuxContainerSecurityContext{Privileged: true}, "", nil},
		"unconfined":                    {with, &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}}, "", nil},
		"localhost":                     {with, &runtimeapi.LinuxContainerSecurityContext{Apparmor: lh("k8s-deny-write")}, "k8s-deny-write", nil},
		"privileged localhost":          {with, &runtimeapi.LinuxContainerSecurityContext{Privileged: true, ApparmorProfile: "localhost/k8s-deny-write"}, "k8s-deny-write", nil},
		"localhost not loaded":          {with, &runtimeapi.LinuxContainerSecurityContext{Apparmor: lh("k8s-missing")}, "", ErrUnsupported},
		"localhost with a space":        {with, &runtimeapi.LinuxContainerSecurityContext{Apparmor: lh("a b")}, "", ErrInvalid},
		"deprecated unknown form":       {with, &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "k8s-deny-write"}, "", ErrInvalid},
		"localhost without a reference": {with, &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost}}, "", ErrInvalid},
	} {
		got, err := tc.node.AppArmor(tc.sc)
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("%s: %q, %v; want %q, %v", name, got, err, tc.want, tc.err)
		}
	}
}

// Without apparmor_parser, the default profile can be applied only if the
// kernel has it already.
func TestAppArmorDefaultNeedsParser(t *testing.T) {
	n := testNode(t, "", []string{"other"})
	if p, err := n.AppArmor(nil); p != "" || err != nil {
		t.Errorf("nothing asked: %q, %v", p, err)
	}
	if _, err := n.AppArmor(&runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{}}); !errors.Is(err, ErrUnsupported) {
		t.Errorf("runtime default: err = %v", err)
	}
}

func TestSELinux(t *testing.T) {
	n := testNode(t, "", nil)
	if err := n.SELinux(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.selinux, []byte("1"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.SELinux(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("err = %v", err)
	}
}
