// Package nri lets NRI (Node Resource Interface) plugins see and adjust
// pier's pods and containers, through containerd's adaptation library
// (github.com/containerd/nri/pkg/adaptation): plugins pierd starts from a
// plugin directory, and plugins that connect to a socket on their own, are
// told of every pod run, stopped and removed and every container created,
// started, updated, stopped and removed; before a container is created
// they may adjust its OCI spec (env, mounts, devices, CDI devices,
// resources, hooks, ...), and they may update other containers' resources
// or evict them. A plugin that connects is first synchronised with the
// pods and containers there are; no pod or container made meanwhile is
// lost (Block).
//
// NRI implements sandbox.Hooks and container.Hooks; Start, Stop and Info
// take a nil *NRI, NRI off.
package nri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	rgen "github.com/containerd/nri/pkg/runtime-tools/generate"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-tools/generate"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cdi"
	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/sandbox"
)

// Options configure NRI.
type Options struct {
	RuntimeName, RuntimeVersion string // what plugins are told of the runtime
	SocketPath                  string // where plugins connect; "" accepts none
	PluginPath                  string // plugins pierd starts itself
	PluginConfigPath            string // their configuration
	RegistrationTimeout         time.Duration
	RequestTimeout              time.Duration
}

// NRI is pier's side of NRI.
type NRI struct {
	opts       Options
	a          *adaptation.Adaptation
	pods       *sandbox.Manager
	containers *container.Manager
	devices    *cdi.Registry

	mu   sync.Mutex
	told map[string]*told // the containers plugins were told of, by id
}

// told is what the plugins were told of a container: its lock orders the
// notifications of one container (a stop before its removal).
type told struct {
	mu      sync.Mutex
	stopped bool
	// spec is the container's OCI spec as created, read once (under
	// NRI.mu; nil until then).
	spec *specs.Spec
}

// New makes pier's NRI; Start starts it.
func New(opts Options) (*NRI, error) {
	nrilog.Set(logger{})
	adaptation.SetPluginRegistrationTimeout(opts.RegistrationTimeout)
	adaptation.SetPluginRequestTimeout(opts.RequestTimeout)
	n := &NRI{opts: opts, told: map[string]*told{}}
	aopts := []adaptation.Option{
		adaptation.WithPluginPath(opts.PluginPath),
		adaptation.WithPluginConfigPath(opts.PluginConfigPath),
	}
	if opts.SocketPath != "" {
		aopts = append(aopts, adaptation.WithSocketPath(opts.SocketPath))
	} else {
		aopts = append(aopts, adaptation.WithDisabledExternalConnections())
	}
	a, err := adaptation.New(opts.RuntimeName, opts.RuntimeVersion, n.synchronize, n.update, aopts...)
	if err != nil {
		return nil, fmt.Errorf("NRI: %w", err)
	}
	n.a = a
	return n, nil
}

// Start starts the plugins of the plugin directory and accepts plugins on
// the socket; each is synchronised with pods and containers first.
func (n *NRI) Start(pods *sandbox.Manager, containers *container.Manager, devices *cdi.Registry) error {
	if n == nil {
		return nil
	}
	n.pods, n.containers, n.devices = pods, containers, devices
	for _, c := range containers.List(container.Filter{}) {
		n.told[c.ID] = &told{stopped: c.State == container.Exited}
	}
	if err := n.a.Start(); err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	// The library leaves the socket's mode to the umask, and its directory
	// as it found it: plugins are root's.
	if n.opts.SocketPath != "" {
		if err := os.Chmod(n.opts.SocketPath, 0o600); err != nil {
			n.a.Stop()
			return fmt.Errorf("NRI: %w", err)
		}
	}
	klog.InfoS("NRI", "socket", n.opts.SocketPath, "pluginPath", n.opts.PluginPath)
	return nil
}

// Stop disconnects the plugins.
func (n *NRI) Stop() {
	if n != nil {
		n.a.Stop()
	}
}

// Info is what Status's verbose info says of NRI.
func (n *NRI) Info() map[string]any {
	if n == nil {
		return map[string]any{"enabled": false}
	}
	return map[string]any{
		"enabled": true, "socketPath": n.opts.SocketPath, "pluginPath": n.opts.PluginPath,
		"pluginConfigPath":    n.opts.PluginConfigPath,
		"registrationTimeout": n.opts.RegistrationTimeout.String(), "requestTimeout": n.opts.RequestTimeout.String(),
	}
}

// Block holds off the synchronisation of a plugin that connects until
// unblock.
func (n *NRI) Block() (unblock func()) {
	b := n.a.BlockPluginSync()
	return b.Unblock
}

// synchronize tells a plugin that connects of the pods and containers
// there are (adaptation.SyncFn); the adaptation holds off Block meanwhile.
func (n *NRI) synchronize(ctx context.Context, cb adaptation.SyncCB) error {
	var pods []*api.PodSandbox
	for _, sb := range n.pods.List(sandbox.Filter{}) {
		pods = append(pods, podSandbox(sb))
	}
	var ctrs []*api.Container
	for _, c := range n.containers.List(container.Filter{}) {
		ctrs = append(ctrs, n.container(c, nil))
	}
	updates, err := cb(ctx, pods, ctrs)
	if err != nil {
		return err
	}
	if failed := n.apply(ctx, updates); len(failed) > 0 {
		klog.InfoS("NRI plugin's updates at synchronisation failed", "containers", len(failed))
	}
	return nil
}

// update applies the updates a plugin asks for on its own
// (adaptation.UpdateFn), and returns those that failed.
func (n *NRI) update(ctx context.Context, updates []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	return n.apply(ctx, updates), nil
}

// apply applies updates of containers' resources, without telling the
// plugins; it returns those that failed and do not ignore failure.
func (n *NRI) apply(ctx context.Context, updates []*api.ContainerUpdate) []*api.ContainerUpdate {
	var failed []*api.ContainerUpdate
	for _, u := range updates {
		c, err := n.containers.Get(u.GetContainerId())
		if err == nil {
			res := withNRIResources(c.CurrentResources(), u.GetLinux().GetResources())
			err = n.containers.ApplyResources(ctx, c.ID, res)
		}
		if err != nil {
			klog.ErrorS(err, "Applying an NRI plugin's update of a container", "id", u.GetContainerId())
			if !u.GetIgnoreFailure() {
				failed = append(failed, u)
			}
		}
	}
	return failed
}

// evict stops the containers plugins want gone.
func (n *NRI) evict(ctx context.Context, evictions []*api.ContainerEviction) {
	for _, e := range evictions {
		klog.InfoS("Stopping a container an NRI plugin evicts", "id", e.GetContainerId(), "reason", e.GetReason())
		if err := n.containers.Stop(ctx, e.GetContainerId(), 0); err != nil {
			klog.ErrorS(err, "Evicting a container", "id", e.GetContainerId())
		}
	}
}

// RunPod tells the plugins of a pod made (sandbox.Hooks).
func (n *NRI) RunPod(ctx context.Context, sb *sandbox.Sandbox) error {
	if err := n.a.RunPodSandbox(ctx, &api.RunPodSandboxRequest{Pod: podSandbox(sb)}); err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	return nil
}

// StopPod tells the plugins of a pod stopped (sandbox.Hooks), after the
// stops of its containers (the CRI handler stopped them; their own
// notifications may still be on their way).
func (n *NRI) StopPod(ctx context.Context, sb *sandbox.Sandbox) {
	for _, id := range n.containers.InPod(sb.ID) {
		if c, err := n.containers.Get(id); err == nil && c.State == container.Exited {
			n.StopContainer(ctx, sb, c)
		}
	}
	if err := n.a.StopPodSandbox(ctx, &api.StopPodSandboxRequest{Pod: podSandbox(sb)}); err != nil {
		klog.ErrorS(err, "NRI plugins on a pod stopped", "id", sb.ID)
	}
}

// RemovePod tells the plugins of a pod removed (sandbox.Hooks).
func (n *NRI) RemovePod(ctx context.Context, sb *sandbox.Sandbox) {
	if err := n.a.RemovePodSandbox(ctx, &api.RemovePodSandboxRequest{Pod: podSandbox(sb)}); err != nil {
		klog.ErrorS(err, "NRI plugins on a pod removed", "id", sb.ID)
	}
}

// CreateContainer lets the plugins adjust a new container's spec
// (container.Hooks), then applies their updates of other containers.
func (n *NRI) CreateContainer(ctx context.Context, pod *sandbox.Sandbox, c *container.Container, spec *specs.Spec) error {
	n.mu.Lock()
	n.told[c.ID] = &told{spec: spec} // as the plugins adjust it
	n.mu.Unlock()
	resp, err := n.a.CreateContainer(ctx, &api.CreateContainerRequest{Pod: podSandbox(pod), Container: n.container(c, spec)})
	if err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	g := generate.NewFromSpec(spec)
	adjuster := rgen.SpecGenerator(&g, rgen.WithCDIDeviceInjector(func(s *specs.Spec, devices []string) error {
		return n.devices.Inject(s, devices)
	}))
	if err := adjuster.Adjust(resp.GetAdjust()); err != nil {
		return fmt.Errorf("NRI: apply the plugins' adjustment: %w", err)
	}
	if failed := n.apply(ctx, resp.GetUpdate()); len(failed) > 0 {
		return fmt.Errorf("NRI: %d update(s) of other containers that the plugins asked for failed", len(failed))
	}
	return nil
}

// PostCreateContainer tells the plugins the runtime created a container.
func (n *NRI) PostCreateContainer(ctx context.Context, pod *sandbox.Sandbox, c *container.Container) {
	if err := n.a.PostCreateContainer(ctx, &api.PostCreateContainerRequest{Pod: podSandbox(pod), Container: n.container(c, nil)}); err != nil {
		klog.ErrorS(err, "NRI plugins on a container created", "id", c.ID)
	}
}

// StartContainer tells the plugins of a start before the runtime's.
func (n *NRI) StartContainer(ctx context.Context, pod *sandbox.Sandbox, c *container.Container) error {
	if err := n.a.StartContainer(ctx, &api.StartContainerRequest{Pod: podSandbox(pod), Container: n.container(c, nil)}); err != nil {
		return fmt.Errorf("NRI: %w", err)
	}
	return nil
}

// PostStartContainer tells the plugins a container started.
func (n *NRI) PostStartContainer(ctx context.Context, pod *sandbox.Sandbox, c *container.Container) {
	if err := n.a.PostStartContainer(ctx, &api.PostStartContainerRequest{Pod: podSandbox(pod), Container: n.container(c, nil)}); err != nil {
		klog.ErrorS(err, "NRI plugins on a container started", "id", c.ID)
	}
}

// UpdateContainer lets the plugins adjust an update of a container's
// resources, and applies their updates of other containers and their
// evictions.
func (n *NRI) UpdateContainer(ctx context.Context, pod *sandbox.Sandbox, c *container.Container, res *runtimeapi.LinuxContainerResources) (*runtimeapi.LinuxContainerResources, error) {
	resp, err := n.a.UpdateContainer(ctx, &api.UpdateContainerRequest{Pod: podSandbox(pod), Container: n.container(c, nil), LinuxResources: nriResources(res)})
	if err != nil {
		return nil, fmt.Errorf("NRI: %w", err)
	}
	var others []*api.ContainerUpdate
	for _, u := range resp.GetUpdate() {
		if u.GetContainerId() == c.ID {
			res = withNRIResources(res, u.GetLinux().GetResources())
		} else {
			others = append(others, u)
		}
	}
	if failed := n.apply(ctx, others); len(failed) > 0 {
		return nil, fmt.Errorf("NRI: %d update(s) of other containers that the plugins asked for failed", len(failed))
	}
	n.evict(ctx, resp.GetEvict())
	return res, nil
}

// PostUpdateContainer tells the plugins a container's resources changed.
func (n *NRI) PostUpdateContainer(ctx context.Context, pod *sandbox.Sandbox, c *container.Container) {
	if err := n.a.PostUpdateContainer(ctx, &api.PostUpdateContainerRequest{Pod: podSandbox(pod), Container: n.container(c, nil)}); err != nil {
		klog.ErrorS(err, "NRI plugins on a container updated", "id", c.ID)
	}
}

// StopContainer tells the plugins of a container's exit, once, and applies
// their updates of other containers.
func (n *NRI) StopContainer(ctx context.Context, pod *sandbox.Sandbox, c *container.Container) {
	n.mu.Lock()
	t := n.told[c.ID]
	n.mu.Unlock()
	if t == nil {
		return // removed, or never told of
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n.stop(ctx, pod, c, t)
}

// stop is StopContainer; the caller holds t.mu.
func (n *NRI) stop(ctx context.Context, pod *sandbox.Sandbox, c *container.Container, t *told) {
	if t.stopped {
		return
	}
	t.stopped = true
	resp, err := n.a.StopContainer(ctx, &api.StopContainerRequest{Pod: podSandbox(pod), Container: n.container(c, nil)})
	if err != nil {
		klog.ErrorS(err, "NRI plugins on a container stopped", "id", c.ID)
		return
	}
	n.apply(ctx, resp.GetUpdate())
}

// RemoveContainer tells the plugins of a container removed, after its
// stop if they were not told of it yet.
func (n *NRI) RemoveContainer(ctx context.Context, pod *sandbox.Sandbox, c *container.Container) {
	n.mu.Lock()
	t := n.told[c.ID]
	delete(n.told, c.ID)
	n.mu.Unlock()
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n.stop(ctx, pod, c, t)
	if err := n.a.RemoveContainer(ctx, &api.RemoveContainerRequest{Pod: podSandbox(pod), Container: n.container(c, nil)}); err != nil {
		klog.ErrorS(err, "NRI plugins on a container removed", "id", c.ID)
	}
}

// logger sends the adaptation's log to klog: its info is pierd's -v 2.
type logger struct{}

func (logger) Debugf(_ context.Context, format string, args ...any) {
	klog.V(4).InfoS("NRI: " + fmt.Sprintf(format, args...))
}
func (logger) Infof(_ context.Context, format string, args ...any) {
	klog.V(2).InfoS("NRI: " + fmt.Sprintf(format, args...))
}
func (logger) Warnf(_ context.Context, format string, args ...any) {
	klog.InfoS("NRI: " + fmt.Sprintf(format, args...))
}
func (logger) Errorf(_ context.Context, format string, args ...any) {
	klog.ErrorS(errors.New(fmt.Sprintf(format, args...)), "NRI")
}

// sortedKeys is m's keys in order.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
