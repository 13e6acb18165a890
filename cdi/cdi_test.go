package cdi

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// nullSpec is a vendor's CDI spec of kind pier.test/null: device null0 is
// the host's /dev/null, seen in the container as /dev/pier-null, and sets
// PIER_CDI.
const nullSpec = `{
  "cdiVersion": "0.6.0",
  "kind": "pier.test/null",
  "devices": [{
    "name": "null0",
    "containerEdits": {
      "deviceNodes": [{"path": "/dev/pier-null", "hostPath": "/dev/null"}],
      "env": ["PIER_CDI=null0"]
    }
  }]
}
`

// writeSpec writes a spec file into dir.
func writeSpec(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newRegistry is a Registry of dirs, closed when the test ends.
func newRegistry(t *testing.T, dirs ...string) *Registry {
	t.Helper()
	r, err := New(dirs)
	if err != nil {
		t.Fatal(err)
	}
	if r == nil {
		t.Fatalf("New(%q) is nil", dirs)
	}
	return r
}

// baseSpec is a container's OCI spec before devices are added.
func baseSpec() *specs.Spec {
	return &specs.Spec{
		Process: &specs.Process{Env: []string{"PATH=/bin"}},
		Linux: &specs.Linux{Resources: &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{
			{Allow: false, Access: "rwm"},
		}}},
	}
}

// TestRequested checks the devices a container asks for: CDIDevices first,
// then those of its cdi.k8s.io/* annotations (other annotations ignored),
// each once; a name that is not fully qualified, in either, is an error
// wrapping ErrUnknownDevice.
func TestRequested(t *testing.T) {
	got, err := Requested([]string{"pier.test/null=null0", "pier.test/null=null1", "pier.test/null=null0"}, map[string]string{
		"cdi.k8s.io/b":         "pier.test/null=null2,pier.test/null=null1",
		"cdi.k8s.io/a":         "vendor.example/gpu=g0",
		"io.kubernetes.pod/ns": "not-a-device",
	})
	want := []string{"pier.test/null=null0", "pier.test/null=null1", "pier.test/null=null2", "vendor.example/gpu=g0"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("Requested: %q, %v; want %q", got, err, want)
	}
	if got, err := Requested(nil, nil); err != nil || len(got) != 0 {
		t.Errorf("Requested(nil, nil): %q, %v; want none", got, err)
	}
	for name, c := range map[string]struct {
		names       []string
		annotations map[string]string
		says        string
	}{
		"unqualified name":       {names: []string{"null0"}, says: `"null0"`},
		"name without a vendor":  {names: []string{"null=null0"}, says: `"null=null0"`},
		"unqualified annotation": {annotations: map[string]string{"cdi.k8s.io/x": "pier.test/null"}, says: `"pier.test/null"`},
		"empty annotation":       {annotations: map[string]string{"cdi.k8s.io/x": ""}, says: `""`},
	} {
		got, err := Requested(c.names, c.annotations)
		if !errors.Is(err, ErrUnknownDevice) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: Requested: %q, %v; want an error wrapping ErrUnknownDevice naming %s", name, got, err, c.says)
		}
	}
}

// TestInject checks that a device's edits reach the container's spec: its
// device node (type and numbers from the host's /dev/null), an allow rule
// for it in the device cgroup, and its env; and that an unknown device is
// an error wrapping ErrUnknownDevice naming it, with the spec unchanged.
func TestInject(t *testing.T) {
	dir := t.TempDir()
	writeSpec(t, dir, "pier-null.json", nullSpec)
	r := newRegistry(t, dir)

	var st unix.Stat_t
	if err := unix.Stat("/dev/null", &st); err != nil {
		t.Fatal(err)
	}
	major, minor := int64(unix.Major(uint64(st.Rdev))), int64(unix.Minor(uint64(st.Rdev)))

	spec := baseSpec()
	if err := r.Inject(spec, []string{"pier.test/null=null0"}); err != nil {
		t.Fatalf("Inject: %v", err)
	}
	var node *specs.LinuxDevice
	for i, d := range spec.Linux.Devices {
		if d.Path == "/dev/pier-null" {
			node = &spec.Linux.Devices[i]
		}
	}
	if node == nil || node.Type != "c" || node.Major != major || node.Minor != minor {
		t.Errorf("devices %+v: want /dev/pier-null, a character device %d:%d", spec.Linux.Devices, major, minor)
	}
	rules := spec.Linux.Resources.Devices
	allow := slices.IndexFunc(rules, func(r specs.LinuxDeviceCgroup) bool {
		return r.Allow && r.Type == "c" && r.Major != nil && *r.Major == major && r.Minor != nil && *r.Minor == minor && r.Access == "rwm"
	})
	// The rule follows the deny-all rule, which it would not override otherwise.
	if allow < 1 {
		t.Errorf("device cgroup rules %+v: want an rwm allow rule for c %d:%d after the deny-all one", rules, major, minor)
	}
	if !slices.Contains(spec.Process.Env, "PIER_CDI=null0") || !slices.Contains(spec.Process.Env, "PATH=/bin") {
		t.Errorf("env %q: want PIER_CDI=null0 added", spec.Process.Env)
	}

	// No device: nothing to do, even without a registry.
	spec = baseSpec()
	for _, reg := range []*Registry{r, nil} {
		if err := reg.Inject(spec, nil); err != nil || !reflect.DeepEqual(spec, baseSpec()) {
			t.Errorf("Inject of no device: %v, spec %+v", err, spec)
		}
	}

	for _, devices := range [][]string{{"pier.test/null=null9"}, {"pier.test/null=null0", "pier.test/null=null9"}} {
		spec = baseSpec()
		err := r.Inject(spec, devices)
		if !errors.Is(err, ErrUnknownDevice) || !strings.Contains(err.Error(), "pier.test/null=null9") || strings.Contains(err.Error(), "null0") {
			t.Errorf("Inject %q: %v; want an error wrapping ErrUnknownDevice naming pier.test/null=null9 alone", devices, err)
		}
		if !reflect.DeepEqual(spec, baseSpec()) {
			t.Errorf("Inject %q failed but changed the spec: %+v", devices, spec)
		}
	}
}

// TestInjectMissingHostDevice checks that a device whose spec names a host
// device node that does not exist is an error naming the device, not an
// unknown device: the vendor's spec is wrong, not the container's request.
func TestInjectMissingHostDevice(t *testing.T) {
	dir := t.TempDir()
	writeSpec(t, dir, "pier-gone.json", strings.ReplaceAll(strings.ReplaceAll(nullSpec, "/dev/null", filepath.Join(dir, "gone")), "pier.test/null", "pier.test/gone"))
	r := newRegistry(t, dir)
	err := r.Inject(baseSpec(), []string{"pier.test/gone=null0"})
	if err == nil || errors.Is(err, ErrUnknownDevice) || !strings.Contains(err.Error(), "pier.test/gone=null0") {
		t.Errorf("Inject of a device whose host node is missing: %v; want an error naming it, not ErrUnknownDevice", err)
	}
}

// TestNilRegistry checks that a nil Registry (CDI off) refuses any device,
// naming it, and has no Info; and that New of no directory is nil.
func TestNilRegistry(t *testing.T) {
	r, err := New(nil)
	if err != nil || r != nil {
		t.Fatalf("New(nil): %v, %v; want nil, nil", r, err)
	}
	spec := baseSpec()
	err = r.Inject(spec, []string{"pier.test/null=null0"})
	if !errors.Is(err, ErrUnknownDevice) || !strings.Contains(err.Error(), "pier.test/null=null0") {
		t.Errorf("nil Registry: Inject: %v; want an error wrapping ErrUnknownDevice naming the device", err)
	}
	if !reflect.DeepEqual(spec, baseSpec()) {
		t.Errorf("nil Registry: Inject changed the spec: %+v", spec)
	}
	if info := r.Info(); info != nil {
		t.Errorf("nil Registry: Info %+v, want nil", info)
	}
}

// TestRefresh checks that a spec file written after New, into a directory
// that existed or into one made since, is used without a new Registry,
// and that a removed one is forgotten.
func TestRefresh(t *testing.T) {
	dir := t.TempDir()
	later := filepath.Join(t.TempDir(), "later") // missing at New
	r := newRegistry(t, dir, later)
	device := "pier.test/null=null0"
	if err := r.Inject(baseSpec(), []string{device}); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("Inject before any spec: %v, want ErrUnknownDevice", err)
	}
	// injected polls until Inject's answer is want.
	injected := func(what string, want bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := r.Inject(baseSpec(), []string{device})
			if (err == nil) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: Inject: %v 5 s later", what, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	writeSpec(t, dir, "pier-null.json", nullSpec)
	injected("spec written into a watched directory", true)
	if err := os.Remove(filepath.Join(dir, "pier-null.json")); err != nil {
		t.Fatal(err)
	}
	injected("spec removed", false)

	if err := os.Mkdir(later, 0o755); err != nil {
		t.Fatal(err)
	}
	writeSpec(t, later, "pier-null.yaml", nullSpec) // JSON is YAML
	injected("spec written into a directory made after New", true)
}

// TestInfo checks what Status's verbose info says: the spec directories,
// the devices, and a spec file that cannot be read, with why; a missing
// spec directory (a node without /etc/cdi) is not an error.
func TestInfo(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(t.TempDir(), "missing")
	writeSpec(t, dir, "pier-null.json", nullSpec)
	writeSpec(t, dir, "broken.json", `{"cdiVersion": "0.6.0", "kind": "pier.test/broken", "devices": [`)
	r := newRegistry(t, missing, dir)
	info := r.Info()
	if !slices.Equal(info.SpecDirs, []string{missing, dir}) {
		t.Errorf("SpecDirs %q, want %q", info.SpecDirs, []string{missing, dir})
	}
	if !slices.Equal(info.Devices, []string{"pier.test/null=null0"}) {
		t.Errorf("Devices %q, want [pier.test/null=null0]", info.Devices)
	}
	broken := filepath.Join(dir, "broken.json")
	if len(info.Errors) != 1 || info.Errors[broken] == "" {
		t.Errorf("Errors %q, want one for %s", info.Errors, broken)
	}

	// Fixed: its device is listed, its error gone.
	writeSpec(t, dir, "broken.json", `{"cdiVersion": "0.6.0", "kind": "pier.test/broken", "devices": [{"name": "b0", "containerEdits": {"env": ["B=0"]}}]}`)
	deadline := time.Now().Add(5 * time.Second)
	for info = r.Info(); len(info.Errors) > 0 || len(info.Devices) != 2; info = r.Info() {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the broken spec was fixed: %+v", info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !slices.Equal(info.Devices, []string{"pier.test/broken=b0", "pier.test/null=null0"}) {
		t.Errorf("Devices %q after the fix", info.Devices)
	}
}
