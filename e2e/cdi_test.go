package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// cdiSpec is a fake vendor's CDI spec of kind pier.test/<class>: device
// <name> is the host's hostDev, /dev/pier-<class> in the container, and
// sets PIER_CDI=<name>.
func cdiSpec(class, name, hostDev string) string {
	return fmt.Sprintf(`{
  "cdiVersion": "0.6.0",
  "kind": "pier.test/%s",
  "devices": [{
    "name": %q,
    "containerEdits": {
      "deviceNodes": [{"path": "/dev/pier-%s", "hostPath": %q}],
      "env": ["PIER_CDI=%s"]
    }
  }]
}
`, class, name, class, hostDev, name)
}

// cdiConfig is pierd's configuration reading CDI specs from dir alone.
func cdiConfig(dir string) string {
	return fmt.Sprintf("[cdi]\nspec_dirs = [%q]\n", dir)
}

// deviceCheck is what a container's shell says of /dev/pier-<class>: a
// character device, written to, and PIER_CDI.
func deviceCheck(t *testing.T, p *testenv.Pierd, id, class string) string {
	t.Helper()
	return execOut(t, p, id, "sh", "-c", fmt.Sprintf(`dev=/dev/pier-%s
if [ -c $dev ]; then echo char; elif [ -e $dev ]; then echo not-char; else echo absent; fi
[ -c $dev ] && echo hello 2>/dev/null >$dev && echo wrote || echo write-failed
echo "PIER_CDI=$PIER_CDI"`, class))
}

// cdiInfo is what pierd's verbose Status says of CDI.
type cdiInfo struct {
	Enabled  *bool             `json:"enabled"`
	SpecDirs []string          `json:"specDirs"`
	Devices  []string          `json:"devices"`
	Errors   map[string]string `json:"errors"`
}

func statusCDI(t *testing.T, p *testenv.Pierd) cdiInfo {
	t.Helper()
	resp, err := p.Runtime.Status(ctx(t), &runtimeapi.StatusRequest{Verbose: true})
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	var info cdiInfo
	if err := json.Unmarshal([]byte(resp.Info["cdi"]), &info); err != nil {
		t.Fatalf("Status info cdi %q: %v", resp.Info["cdi"], err)
	}
	return info
}

// containerDirs lists the entries of pierd's containers directories (root
// and state) and the mounts under its directory.
func containerDirs(t *testing.T, p *testenv.Pierd) []string {
	t.Helper()
	var out []string
	for _, d := range []string{filepath.Join(p.Root(), "containers"), filepath.Join(p.Dir, "state", "containers")} {
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out = append(out, filepath.Join(d, e.Name()))
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], p.Dir+"/") {
			out = append(out, "mount "+f[4])
		}
	}
	slices.Sort(out)
	return out
}

// TestCDI checks CDI devices end to end: a container that asks for a
// device of a vendor's spec (in the CRI's CDIDevices or a cdi.k8s.io/*
// annotation) sees its device node, can use it, and has its env; one that
// does not sees none; an unknown device is InvalidArgument naming it and
// leaves nothing behind; a spec written while pierd runs is used at once;
// and Status's verbose info lists the devices.
func TestCDI(t *testing.T) {
	specDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(specDir, "pier-null.json"), []byte(cdiSpec("null", "null0", "/dev/null")), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startPierd(t, cdiConfig(specDir))
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "cdi")
	const want = "char\nwrote\nPIER_CDI=null0\n"

	t.Run("CDIDevices", func(t *testing.T) {
		cfg := containerConfig("cdi-devices", "sleep", "1000")
		cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: "pier.test/null=null0"}}
		id := startContainer(t, p, podID, pod, cfg)
		if got := deviceCheck(t, p, id, "null"); got != want {
			t.Errorf("in the container: %q, want %q", got, want)
		}
		plain := startContainer(t, p, podID, pod, containerConfig("cdi-none", "sleep", "1000"))
		if got := deviceCheck(t, p, plain, "null"); got != "absent\nwrite-failed\nPIER_CDI=\n" {
			t.Errorf("in a container that asks for no device: %q", got)
		}
	})
	t.Run("Annotation", func(t *testing.T) {
		cfg := containerConfig("cdi-annotation", "sleep", "1000")
		cfg.Annotations = map[string]string{"cdi.k8s.io/pier-test": "pier.test/null=null0"}
		id := startContainer(t, p, podID, pod, cfg)
		if got := deviceCheck(t, p, id, "null"); got != want {
			t.Errorf("in the container: %q, want %q", got, want)
		}
	})
	t.Run("UnknownDevice", func(t *testing.T) {
		before := containerDirs(t, p)
		list := func() []*runtimeapi.Container {
			resp, err := p.Runtime.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{})
			if err != nil {
				t.Fatal(err)
			}
			return resp.Containers
		}
		listed := len(list())
		for i, c := range []struct {
			name        string
			devices     []string
			annotations map[string]string
			says        string
		}{
			{name: "unknown device", devices: []string{"pier.test/null=null9"}, says: "pier.test/null=null9"},
			{name: "known and unknown", devices: []string{"pier.test/null=null0", "pier.test/gpu=g0"}, says: "pier.test/gpu=g0"},
			{name: "unknown annotation", annotations: map[string]string{"cdi.k8s.io/x": "pier.test/null=null7"}, says: "pier.test/null=null7"},
			{name: "unqualified name", devices: []string{"null0"}, says: `"null0"`},
			{name: "unqualified annotation", annotations: map[string]string{"cdi.k8s.io/x": "null0"}, says: `"null0"`},
		} {
			cfg := containerConfig(fmt.Sprintf("cdi-unknown-%d", i), "sleep", "1000")
			for _, d := range c.devices {
				cfg.CDIDevices = append(cfg.CDIDevices, &runtimeapi.CDIDevice{Name: d})
			}
			cfg.Annotations = c.annotations
			_, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), c.says) {
				t.Errorf("%s: CreateContainer: %v; want InvalidArgument naming %s", c.name, err, c.says)
			}
		}
		if n := len(list()); n != listed {
			t.Errorf("%d containers listed after the failed creations, %d before", n, listed)
		}
		if after := containerDirs(t, p); !slices.Equal(after, before) {
			t.Errorf("the failed creations left files or mounts:\nbefore %q\nafter  %q", before, after)
		}
	})
	t.Run("SpecWrittenWhileRunning", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(specDir, "pier-zero.json"), []byte(cdiSpec("zero", "zero0", "/dev/zero")), 0o644); err != nil {
			t.Fatal(err)
		}
		// pierd watches the directory: the device can be had within
		// moments (CreateContainer alone: Status would reread the specs).
		cfg := containerConfig("cdi-late", "sleep", "1000")
		cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: "pier.test/zero=zero0"}}
		var id string
		for deadline := time.Now().Add(10 * time.Second); id == ""; time.Sleep(50 * time.Millisecond) {
			resp, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
			switch {
			case err == nil:
				id = resp.ContainerId
			case status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "pier.test/zero=zero0"):
				t.Fatalf("CreateContainer: %v", err)
			case time.Now().After(deadline):
				t.Fatalf("CreateContainer 10 s after the device's spec was written: %v", err)
			}
		}
		if _, err := p.Runtime.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("StartContainer: %v", err)
		}
		if devices := statusCDI(t, p).Devices; !slices.Contains(devices, "pier.test/zero=zero0") {
			t.Errorf("Status lists the devices %q, without pier.test/zero=zero0", devices)
		}
		if got := deviceCheck(t, p, id, "zero"); got != "char\nwrote\nPIER_CDI=zero0\n" {
			t.Errorf("in the container: %q", got)
		}
		// /dev/zero reads zeros: it is the device the spec names.
		if got := execOut(t, p, id, "sh", "-c", "head -c 4 /dev/pier-zero | od -An -tx1"); strings.Fields(got)[0] != "00" || len(strings.Fields(got)) != 4 {
			t.Errorf("/dev/pier-zero reads %q, want four zero bytes", got)
		}
	})
	t.Run("StatusInfo", func(t *testing.T) {
		info := statusCDI(t, p)
		if !slices.Equal(info.SpecDirs, []string{specDir}) || !slices.Contains(info.Devices, "pier.test/null=null0") || len(info.Errors) != 0 {
			t.Errorf("Status info cdi: %+v; want spec dir %s, device pier.test/null=null0, no errors", info, specDir)
		}
	})
}

// TestCDIDisabled checks that with no spec directory a container asking
// for a CDI device is refused, saying CDI is disabled, and Status says so.
func TestCDIDisabled(t *testing.T) {
	p := startPierd(t, "[cdi]\nspec_dirs = []\n")
	mustPull(t, p, reg.Ref(busyboxImg))
	podID, pod := podWithLogs(t, p, "cdi-off")
	cfg := containerConfig("cdi-off", "sleep", "1000")
	cfg.CDIDevices = []*runtimeapi.CDIDevice{{Name: "pier.test/null=null0"}}
	_, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
	wantCode(t, "CreateContainer with CDI off", err, codes.InvalidArgument, "pier.test/null=null0")
	if err != nil && !strings.Contains(err.Error(), "disabled") {
		t.Errorf("CreateContainer with CDI off: %v; want it to say CDI is disabled", err)
	}
	if info := statusCDI(t, p); info.Enabled == nil || *info.Enabled {
		t.Errorf("Status info cdi: %+v; want enabled false", info)
	}
	// A container that asks for no device still runs.
	startContainer(t, p, podID, pod, containerConfig("plain", "true"))
}
