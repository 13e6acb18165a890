// Package cni wraps libcni for pod networking: it picks the node's network
// configuration, attaches a pod's network namespace to it (CNI ADD) and
// detaches it again (CNI DEL) with the configuration cached at ADD time.
package cni

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// ifName is the pod's interface on the network.
const ifName = "eth0"

// ErrNoConfig means the configuration directory holds no usable network.
var ErrNoConfig = errors.New("no network config found")

// Options configures a Manager. Zero fields take the defaults.
type Options struct {
	ConfDir    string   // network configurations; default /etc/cni/net.d
	PluginDirs []string // plugin binaries; default /opt/cni/bin, /usr/lib/cni
	CacheDir   string   // libcni's result cache, must persist; default /var/lib/pier/cni
}

// Manager attaches pods to the first network configuration in its ConfDir.
// It is safe for concurrent use.
type Manager struct {
	confDir    string
	pluginDirs []string
	cni        *libcni.CNIConfig
	conf       confCache
}

// New returns a Manager for opts. It touches nothing on disk.
func New(opts Options) *Manager {
	if opts.ConfDir == "" {
		opts.ConfDir = "/etc/cni/net.d"
	}
	if len(opts.PluginDirs) == 0 {
		opts.PluginDirs = []string{"/opt/cni/bin", "/usr/lib/cni"}
	}
	if opts.CacheDir == "" {
		opts.CacheDir = "/var/lib/pier/cni"
	}
	// An explicit Exec: libcni otherwise creates one lazily, racing between goroutines.
	exec := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}
	return &Manager{
		confDir:    opts.ConfDir,
		pluginDirs: opts.PluginDirs,
		cni:        libcni.NewCNIConfigWithCacheDir(opts.PluginDirs, opts.CacheDir, exec),
	}
}

// PortMapping forwards a host port to a pod port.
type PortMapping struct {
	HostPort      int32
	ContainerPort int32
	Protocol      string // "tcp" (default), "udp" or "sctp"
	HostIP        string // empty: all host addresses
}

// Pod names the pod sandbox to attach or detach.
type Pod struct {
	ID        string // sandbox ID: the CNI container ID
	Name      string
	Namespace string
	UID       string
	NetNS     string // path of the pinned network namespace
	// PortMappings with a HostPort of 0 are skipped.
	PortMappings []PortMapping
	// Interrupted says that Setup may have been cut short (pierd was
	// killed during it): Teardown then runs DEL with the current
	// configuration when it finds nothing cached.
	Interrupted bool
}

// Result is what Setup attached.
type Result struct {
	Network   string   // network name
	Interface string   // interface in the pod, "eth0"
	IPs       []string // pod IPs, IPv4 first
}

// Ready reports whether a usable network configuration exists: nil, or an
// error that says what is missing. It is cheap enough to call every few seconds.
func (m *Manager) Ready() error {
	list, err := m.conf.get(m.confDir)
	if err != nil {
		return err
	}
	for _, p := range list.Plugins {
		if _, err := invoke.FindInPath(p.Network.Type, m.pluginDirs); err != nil {
			return fmt.Errorf("network %q: plugin %q not found in %s", list.Name, p.Network.Type, strings.Join(m.pluginDirs, ":"))
		}
	}
	return nil
}

// Setup attaches the pod to the network (CNI ADD on eth0) after bringing up
// its loopback interface. If ADD fails, Setup runs DEL so that nothing is left
// behind, and returns an error naming the network and the plugin's message.
func (m *Manager) Setup(ctx context.Context, pod Pod) (*Result, error) {
	if pod.ID == "" || pod.NetNS == "" {
		return nil, errors.New("cni setup: pod ID and netns path are required")
	}
	list, err := m.conf.get(m.confDir)
	if err != nil {
		return nil, err
	}
	if err := loopbackUp(pod.NetNS); err != nil {
		return nil, fmt.Errorf("pod %s: bring up lo: %w", pod.ID, err)
	}
	rt := runtimeConf(pod)
	res, err := m.cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		err = fmt.Errorf("network %q: %w", list.Name, err)
		if derr := m.undo(ctx, list, rt); derr != nil {
			err = fmt.Errorf("%w; cleanup after failed add: %v", err, derr)
		}
		return nil, err
	}
	r, err := types100.GetResult(res)
	if err != nil {
		err = fmt.Errorf("network %q: %w", list.Name, err)
		return nil, errors.Join(err, m.Teardown(context.WithoutCancel(ctx), pod))
	}
	return &Result{Network: list.Name, Interface: ifName, IPs: podIPs(r)}, nil
}

// undo runs DEL for every plugin of a failed ADD, last first. Unlike
// libcni's DelNetworkList it carries on past a failing plugin, and skips
// plugins that are not installed (their ADD cannot have run).
func (m *Manager) undo(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	// The ADD may have failed because ctx ended; the cleanup must still run.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var errs []error
	for _, p := range slices.Backward(list.Plugins) {
		if _, err := invoke.FindInPath(p.Network.Type, m.pluginDirs); err != nil {
			continue
		}
		one := &libcni.NetworkConfigList{Name: list.Name, CNIVersion: list.CNIVersion, Plugins: []*libcni.PluginConfig{p}}
		if err := m.cni.DelNetworkList(ctx, one, rt); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Teardown detaches the pod (CNI DEL) with the configuration and arguments
// cached by Setup, so it works after a restart and after the configuration
// changed. It is idempotent: without a cache entry it does nothing (unless
// pod.Interrupted: it then first ends the plugins the interrupted ADD left
// running, so that none of them adds anything after the DEL), and a
// missing network namespace is not an error (plugins then free what they can
// without it; the bridge plugin then cannot find the pod's addresses to remove
// its ipMasq rule, so tear down before unpinning the namespace).
func (m *Manager) Teardown(ctx context.Context, pod Pod) error {
	if pod.ID == "" {
		return errors.New("cni teardown: pod ID is required")
	}
	// A plugin killed half-way (a client that gives up cancels ctx) can
	// leave what its next DEL cannot find: the bridge plugin finds a pod's
	// masquerade rule by the address of the interface it has deleted.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if pod.Interrupted {
		endStrayPlugins(pod.ID)
	}
	atts, err := m.cni.GetCachedAttachments(pod.ID)
	if err != nil {
		return fmt.Errorf("cni teardown: read cache: %w", err)
	}
	if len(atts) == 0 && pod.Interrupted {
		// libcni caches an attachment once ADD has returned: an ADD cut
		// short may have left an address and rules all the same.
		list, err := m.conf.get(m.confDir)
		if err != nil {
			return nil // no network: nothing was made
		}
		rt := runtimeConf(pod)
		if !isNetNS(rt.NetNS) {
			rt.NetNS = ""
		}
		klog.V(4).InfoS("CNI DEL of an interrupted ADD", "pod", pod.ID, "network", list.Name, "netns", rt.NetNS)
		return m.undo(ctx, list, rt)
	}
	var errs []error
	for _, a := range atts {
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil {
			errs = append(errs, fmt.Errorf("network %q: cached config: %w", a.Network, err))
			continue
		}
		netns := pod.NetNS
		if netns == "" {
			netns = a.NetNS
		}
		if !isNetNS(netns) {
			netns = "" // CNI's way to say the namespace is gone
		}
		rt := &libcni.RuntimeConf{ContainerID: pod.ID, NetNS: netns, IfName: a.IfName, Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs}
		klog.V(4).InfoS("CNI DEL", "pod", pod.ID, "network", list.Name, "netns", netns)
		if err := m.cni.DelNetworkList(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("network %q: %w", list.Name, err))
		}
	}
	return errors.Join(errs...)
}

// portMapEntry is the portmap plugin's "portMappings" capability format.
type portMapEntry struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

func runtimeConf(pod Pod) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: pod.ID,
		NetNS:       pod.NetNS,
		IfName:      ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", pod.ID},
			{"K8S_POD_UID", pod.UID},
		},
	}
	var ports []portMapEntry
	for _, p := range pod.PortMappings {
		if p.HostPort <= 0 {
			continue
		}
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		ports = append(ports, portMapEntry{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: proto, HostIP: p.HostIP})
	}
	if len(ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	return rt
}

// podIPs returns the result's addresses inside the pod, IPv4 first.
func podIPs(r *types100.Result) []string {
	var v4, v6 []string
	for _, ip := range r.IPs {
		if i := ip.Interface; i != nil && *i >= 0 && *i < len(r.Interfaces) && r.Interfaces[*i].Sandbox == "" {
			continue // a host-side interface
		}
		if ip.Address.IP.To4() != nil {
			v4 = append(v4, ip.Address.IP.String())
		} else {
			v6 = append(v6, ip.Address.IP.String())
		}
	}
	return append(v4, v6...)
}

// isNetNS says whether path is a network namespace (a mounted nsfs file).
func isNetNS(path string) bool {
	var st unix.Statfs_t
	return path != "" && unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}
