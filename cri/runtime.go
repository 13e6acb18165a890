package cri

import (
	"context"
	"encoding/json"
	"maps"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cdi"
	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/confine"
	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/events"
	"github.com/pier-runtime/pier/nri"
	"github.com/pier-runtime/pier/oci"
	"github.com/pier-runtime/pier/platform"
	"github.com/pier-runtime/pier/sandbox"
)

// RuntimeService serves the CRI RuntimeService. The embedded
// UnimplementedRuntimeServiceServer answers only RPCs pier does not know.
type RuntimeService struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	opts RuntimeOptions

	mu      sync.Mutex
	podCIDR string

	// hmu guards opts.Handlers and opts.DefaultHandler (SetHandlers).
	hmu sync.RWMutex

	podCPU podSamples // the pods' last CPU samples (PodSandboxStats)
}

// SetHandlers replaces the runtime handlers offered and the default one.
func (s *RuntimeService) SetHandlers(handlers []Handler, defaultHandler string) {
	s.hmu.Lock()
	defer s.hmu.Unlock()
	s.opts.Handlers, s.opts.DefaultHandler = handlers, defaultHandler
}

// handlers returns the runtime handlers and the default one.
func (s *RuntimeService) handlers() ([]Handler, string) {
	s.hmu.RLock()
	defer s.hmu.RUnlock()
	return s.opts.Handlers, s.opts.DefaultHandler
}

// RuntimeOptions are what the runtime service is built from.
type RuntimeOptions struct {
	Version        string        // pier's version
	Cgroups        *cgroup.Node  // the node's cgroup layout and driver
	Confine        *confine.Node // the confinement the node can apply
	Pods           *sandbox.Manager
	Containers     *container.Manager
	Events         *events.Hub      // GetContainerEvents' source; nil: one no manager publishes to
	Stream         streaming.Server // serves exec, attach and port-forward sessions
	Network        Network          // the CNI configuration
	Handlers       []Handler        // runtime handlers, probed at start-up
	DefaultHandler string
	Platforms      *platform.Policy // the platforms pods may run; nil: Status says none
	Devices        *cdi.Registry    // the node's CDI devices; nil: CDI is off
	NRI            *nri.NRI         // NRI plugins; nil: NRI is off
}

// Network is what the runtime service asks of the pods' network.
type Network interface {
	Ready() error // nil, or what the configuration lacks
	// CachedResult is the CNI result of a pod's attachment, nil if none.
	CachedResult(podID string) (json.RawMessage, error)
}

// Handler is a runtime handler (an OCI runtime) and, if it cannot run
// containers on this node, why not.
type Handler struct {
	Name    string
	Err     error
	Runtime *oci.Runtime // nil when it cannot
}

// features are what a usable handler offers kubelet: recursive read-only
// mounts where its runtime applies the "rro" mount option, and user
// namespaces where the node can make them (pier idmaps the mounts itself).
func (h Handler) features(userns bool) *runtimeapi.RuntimeHandlerFeatures {
	return &runtimeapi.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: h.Runtime.HasMountOption("rro"), UserNamespaces: userns}
}

// NewRuntimeService returns the runtime service.
func NewRuntimeService(opts RuntimeOptions) *RuntimeService {
	if opts.Events == nil {
		opts.Events = events.NewHub(events.Buffer)
	}
	return &RuntimeService{opts: opts}
}

// handler resolves a requested runtime handler ("" is the default): an
// unknown one is InvalidArgument, one that cannot run here FailedPrecondition.
func (s *RuntimeService) handler(name string) (string, error) {
	handlers, def := s.handlers()
	if name == "" {
		name = def
	}
	for _, h := range handlers {
		if h.Name == name {
			if h.Err != nil {
				return "", status.Errorf(codes.FailedPrecondition, "runtime handler %q cannot run containers on this node: %v", name, h.Err)
			}
			return name, nil
		}
	}
	return "", invalid("unknown runtime handler %q: pier knows %s", name, strings.Join(s.handlerNames(), ", "))
}

func (s *RuntimeService) handlerNames() []string {
	var names []string
	handlers, _ := s.handlers()
	for _, h := range handlers {
		names = append(names, h.Name)
	}
	return names
}

// Version reports pier's name and version and the CRI API version.
func (s *RuntimeService) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           "0.1.0",
		RuntimeName:       "pier",
		RuntimeVersion:    s.opts.Version,
		RuntimeApiVersion: "v1",
	}, nil
}

// Status reports the runtime ready while a handler can run containers
// here, the network ready once a CNI configuration exists, and the usable
// handlers; verbose, also the node's cgroups and why a handler is unusable.
func (s *RuntimeService) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	network := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if err := s.opts.Network.Ready(); err != nil {
		network.Status, network.Reason, network.Message = false, "NetworkPluginNotReady", err.Error()
	}
	runtime := &runtimeapi.RuntimeCondition{Type: runtimeapi.RuntimeReady, Status: true}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{runtime, network}},
		// The supplemental groups policy (Merge, Strict) is applied by
		// container.WithUser.
		Features: &runtimeapi.RuntimeFeatures{SupplementalGroupsPolicy: true},
	}
	var unusable []string
	userns := s.opts.Pods.UserNamespaces()
	handlers, def := s.handlers()
	for _, h := range handlers {
		if h.Err != nil {
			unusable = append(unusable, h.Name+": "+h.Err.Error())
			continue
		}
		names := []string{h.Name}
		if h.Name == def {
			names = append(names, "") // the default handler, as kubelet names it
		}
		for _, n := range names {
			resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{Name: n, Features: h.features(userns == nil)})
		}
	}
	if len(resp.RuntimeHandlers) == 0 {
		runtime.Status, runtime.Reason = false, "NoRuntimeHandler"
		runtime.Message = "no runtime handler can run containers on this node (" + strings.Join(unusable, "; ") + "); fix the handler, then reload pierd (SIGHUP) or restart it"
	}
	if req.GetVerbose() {
		info := s.opts.Cgroups.Info()
		if s.opts.Confine != nil {
			maps.Copy(info, s.opts.Confine.Info())
		}
		for _, h := range handlers {
			if h.Err != nil {
				info["handler."+h.Name] = "unusable: " + h.Err.Error()
			} else {
				info["handler."+h.Name] = "ok"
			}
		}
		// Where root file systems live, as containerd says it (critest
		// checks that its file system can be idmapped).
		config, _ := json.Marshal(map[string]string{"stateDir": s.opts.Containers.UserNamespaceStateDir()})
		info["config"] = string(config)
		if userns != nil {
			info["userNamespaces"] = "unsupported: " + userns.Error()
		}
		if s.opts.Platforms != nil {
			platforms, _ := json.Marshal(s.opts.Platforms.Info())
			info["platforms"] = string(platforms)
		}
		cdiInfo := any(map[string]bool{"enabled": false})
		if d := s.opts.Devices.Info(); d != nil {
			cdiInfo = d
		}
		b, _ := json.Marshal(cdiInfo)
		info["cdi"] = string(b)
		b, _ = json.Marshal(s.opts.NRI.Info())
		info["nri"] = string(b)
		resp.Info = info
	}
	return resp, nil
}

// RuntimeConfig tells kubelet which cgroup driver pier uses.
func (s *RuntimeService) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	driver := runtimeapi.CgroupDriver_CGROUPFS
	if s.opts.Cgroups.Driver == cgroup.Systemd {
		driver = runtimeapi.CgroupDriver_SYSTEMD
	}
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: driver}}, nil
}

// UpdateRuntimeConfig records the node's pod CIDR that kubelet sends.
func (s *RuntimeService) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	cidr := req.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()
	if cidr == "" {
		return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cidr != s.podCIDR {
		klog.InfoS("Pod CIDR updated", "podCIDR", cidr)
		s.podCIDR = cidr
	}
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}
