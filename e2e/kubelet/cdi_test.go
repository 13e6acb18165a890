package kubelet

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// A pod asks for a CDI device as on a real cluster: a device plugin
// advertises an extended resource to kubelet, kubelet allocates one of its
// devices to a container that asks for the resource in its limits, the
// plugin's Allocate answers with the device's CDI name, kubelet passes it
// to the runtime in the CRI's CDIDevices, and pier injects what the
// vendor's CDI spec says.
//
// The plugin registers through kubelet's plugin watcher (a socket in
// <root-dir>/plugins_registry): kubelet's other registration socket,
// device-plugins/kubelet.sock, is always /var/lib/kubelet/device-plugins/
// whatever --root-dir says, shared by every kubelet on the host (the suite
// runs several at once), and each kubelet removes the sockets in it when
// it starts.

// cdiResource is the extended resource of the test's device plugin, and
// the kind of its CDI spec.
const cdiResource = "pier.test/null"

// cdiSpec is the fake vendor's CDI spec: device null0 is the host's
// /dev/null, /dev/pier-null in the container, and sets PIER_CDI=null0.
const cdiSpec = `{
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

// cdiSpecDir makes a directory holding the vendor's CDI spec, for pierd's
// [cdi] spec_dirs, and returns the configuration that reads it.
func cdiSpecDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pier-null.json"), []byte(cdiSpec), 0o644); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("[cdi]\nspec_dirs = [%q]\n", dir)
}

// devicePlugin is a device plugin of resource cdiResource, in the test
// process: it advertises devices, all healthy, and allocates each as the
// CDI device cdiResource=<id>.
type devicePlugin struct {
	registerapi.UnimplementedRegistrationServer
	pluginapi.UnimplementedDevicePluginServer

	devices []string
	socket  string

	mu         sync.Mutex
	registered chan error    // kubelet's registration status, once
	allocated  [][]string    // the device IDs of each Allocate's containers
	stop       chan struct{} // ends ListAndWatch
}

// startDevicePlugin serves a device plugin of devices on a socket in the
// node's kubelet's plugin registry, waits until kubelet has its devices,
// and stops it when the test ends.
func startDevicePlugin(t *testing.T, n *node, devices ...string) *devicePlugin {
	t.Helper()
	p := &devicePlugin{
		devices:    devices,
		socket:     filepath.Join(n.kubelet.RootDir, "plugins_registry", "pier-test-null.sock"),
		registered: make(chan error, 1),
		stop:       make(chan struct{}),
	}
	// kubelet makes the directory when its plugin watcher starts, which
	// may be after it answers healthz; it also registers the sockets it
	// finds there then.
	if err := os.MkdirAll(filepath.Dir(p.socket), 0o750); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", p.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	// One socket for both services: kubelet uses the registration
	// socket as the plugin's endpoint when GetInfo names none.
	registerapi.RegisterRegistrationServer(srv, p)
	pluginapi.RegisterDevicePluginServer(srv, p)
	go srv.Serve(l)
	t.Cleanup(func() {
		close(p.stop)
		srv.Stop()
		os.Remove(p.socket)
	})

	select {
	case err := <-p.registered:
		if err != nil {
			t.Fatalf("kubelet refused the device plugin: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("kubelet did not register the device plugin at %s in 60 s\nkubelet log:\n%s", p.socket, n.kubelet.LogTail(60))
	}
	// kubelet admits a pod's extended resources, and allocates its devices,
	// only once it has the plugin's devices: until then a pod that asks for
	// them runs without. It says when it has them.
	says := []string{`"Processed device updates for resource"`, fmt.Sprintf("resourceName=%q", cdiResource), fmt.Sprintf("healthyCount=%d", len(devices))}
	hasDevices := func() bool {
		for _, line := range strings.Split(n.kubelet.LogText(), "\n") {
			if !slices.ContainsFunc(says, func(s string) bool { return !strings.Contains(line, s) }) {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(30 * time.Second); !hasDevices(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("kubelet's log has no line saying %s 30 s after it registered the device plugin\nkubelet log:\n%s", strings.Join(says, " "), n.kubelet.LogTail(60))
		}
	}
	return p
}

// GetInfo tells kubelet's plugin watcher what the plugin is.
func (p *devicePlugin) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{Type: registerapi.DevicePlugin, Name: cdiResource, SupportedVersions: []string{pluginapi.Version}}, nil
}

// NotifyRegistrationStatus is kubelet's answer to the registration.
func (p *devicePlugin) NotifyRegistrationStatus(_ context.Context, s *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	var err error
	if !s.PluginRegistered {
		err = fmt.Errorf("%s", s.Error)
	}
	select {
	case p.registered <- err:
	default:
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

func (p *devicePlugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

// ListAndWatch advertises the devices, all healthy, once.
func (p *devicePlugin) ListAndWatch(_ *pluginapi.Empty, stream grpc.ServerStreamingServer[pluginapi.ListAndWatchResponse]) error {
	resp := &pluginapi.ListAndWatchResponse{}
	for _, id := range p.devices {
		resp.Devices = append(resp.Devices, &pluginapi.Device{ID: id, Health: pluginapi.Healthy})
	}
	if err := stream.Send(resp); err != nil {
		return err
	}
	select {
	case <-stream.Context().Done():
	case <-p.stop:
	}
	return nil
}

// Allocate answers each container's devices with their CDI names.
func (p *devicePlugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range req.ContainerRequests {
		p.allocated = append(p.allocated, slices.Clone(c.DevicesIds))
		cr := &pluginapi.ContainerAllocateResponse{}
		for _, id := range c.DevicesIds {
			cr.CdiDevices = append(cr.CdiDevices, &pluginapi.CDIDevice{Name: cdiResource + "=" + id})
		}
		resp.ContainerResponses = append(resp.ContainerResponses, cr)
	}
	return resp, nil
}

func (p *devicePlugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// allocations is what Allocate was asked for so far.
func (p *devicePlugin) allocations() [][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.allocated)
}

// cdiPod's container asks for one device of the plugin's resource.
func cdiPod() *corev1.Pod {
	c := ctr("device", idle)
	c.Resources = corev1.ResourceRequirements{
		Requests: resources(cdiResource, "1"),
		Limits:   resources(cdiResource, "1"),
	}
	return newPod("cdi", c)
}

// checkCDIDevice checks that the cdi pod runs, that kubelet had the
// plugin allocate its device, and, inside its container, that the CDI
// device is there: /dev/pier-null a character device it can write to,
// and PIER_CDI=null0.
func checkCDIDevice(t *testing.T, n *node, plugin *devicePlugin) {
	p := n.waitPod(t, "cdi", 2*time.Minute, running())
	if got := plugin.allocations(); !slices.EqualFunc(got, [][]string{{"null0"}}, slices.Equal) {
		t.Errorf("the device plugin was asked to allocate %q, want [[null0]]", got)
	}
	id := containerID(status(p, "device"))
	resp, err := call(func(c context.Context) (*runtimeapi.ExecSyncResponse, error) {
		return n.pierd.Runtime.ExecSync(c, &runtimeapi.ExecSyncRequest{ContainerId: id, Timeout: 20, Cmd: []string{"sh", "-c", `
if [ -c /dev/pier-null ]; then echo char; elif [ -e /dev/pier-null ]; then echo not-char; else echo absent; fi
[ -c /dev/pier-null ] && echo hello 2>/dev/null >/dev/pier-null && echo wrote || echo write-failed
echo "PIER_CDI=$PIER_CDI"`}})
	})
	if err != nil || resp.ExitCode != 0 {
		t.Fatalf("exec in container %s: %v, exit %d: %s", id, err, resp.GetExitCode(), resp.GetStderr())
	}
	if got, want := string(resp.Stdout), "char\nwrote\nPIER_CDI=null0\n"; got != want {
		t.Errorf("in the container: %q, want %q (a character device /dev/pier-null it can write to, and PIER_CDI=null0)", got, want)
	}
}
