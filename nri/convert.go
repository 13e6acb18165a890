package nri

import (
	"encoding/json"
	"os"

	"github.com/containerd/nri/pkg/api"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/sandbox"
)

// podSandbox is a pod as plugins see it; nil for a pod that is gone.
func podSandbox(sb *sandbox.Sandbox) *api.PodSandbox {
	if sb == nil {
		return nil
	}
	c := sb.Config
	p := &api.PodSandbox{
		Id: sb.ID, Name: c.Name, Uid: c.UID, Namespace: c.Namespace,
		Labels: c.Labels, Annotations: c.Annotations, RuntimeHandler: c.RuntimeHandler,
		Ips:   sb.IPs,
		Linux: &api.LinuxPodSandbox{CgroupParent: c.CgroupParent},
	}
	for _, kind := range sortedKeys(sb.Namespaces) {
		p.Linux.Namespaces = append(p.Linux.Namespaces, &api.LinuxNamespace{Type: nsType(kind), Path: sb.Namespaces[kind]})
	}
	if sb.InitPid > 0 {
		p.Pid = uint32(sb.InitPid)
	}
	return p
}

// nsType is the OCI name of a namespace kind of sandbox.Namespaces.
func nsType(kind string) string {
	if kind == "net" {
		return string(specs.NetworkNamespace)
	}
	return kind
}

// container is a container as plugins see it: its record, and its OCI
// spec (spec, or else its bundle's, when there is one).
func (n *NRI) container(c *container.Container, spec *specs.Spec) *api.Container {
	cfg := c.CRIConfig()
	ctr := &api.Container{
		Id: c.ID, PodSandboxId: c.PodID, Name: cfg.GetMetadata().GetName(), State: state(c.State),
		Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
		CreatedAt: c.CreatedAt.UnixNano(), ExitCode: c.ExitCode, StatusReason: c.Reason, StatusMessage: c.Message,
		User:  &api.User{Uid: c.User.UID, Gid: c.User.GID, AdditionalGids: c.User.AdditionalGids},
		Image: &api.Image{Name: cfg.GetImage().GetImage()},
	}
	if !c.StartedAt.IsZero() {
		ctr.StartedAt = c.StartedAt.UnixNano()
	}
	if !c.FinishedAt.IsZero() {
		ctr.FinishedAt = c.FinishedAt.UnixNano()
	}
	for _, d := range cfg.GetCDIDevices() {
		ctr.CDIDevices = append(ctr.CDIDevices, &api.CDIDevice{Name: d.GetName()})
	}
	if spec == nil {
		spec = n.spec(c)
	}
	if spec == nil {
		return ctr
	}
	if p := spec.Process; p != nil {
		ctr.Args, ctr.Env = p.Args, p.Env
		for _, r := range p.Rlimits {
			ctr.Rlimits = append(ctr.Rlimits, &api.POSIXRlimit{Type: r.Type, Hard: r.Hard, Soft: r.Soft})
		}
	}
	ctr.Mounts = api.FromOCIMounts(spec.Mounts)
	ctr.Hooks = api.FromOCIHooks(spec.Hooks)
	if l := spec.Linux; l != nil {
		ctr.Linux = &api.LinuxContainer{
			Namespaces:  api.FromOCILinuxNamespaces(l.Namespaces),
			Devices:     api.FromOCILinuxDevices(l.Devices),
			Resources:   api.FromOCILinuxResources(l.Resources, nil),
			CgroupsPath: l.CgroupsPath,
			Sysctl:      l.Sysctl,
		}
		if spec.Process != nil && spec.Process.OOMScoreAdj != nil {
			ctr.Linux.OomScoreAdj = api.Int(*spec.Process.OOMScoreAdj)
		}
	}
	return ctr
}

// spec is the OCI spec of a container, read from its bundle once for each
// container the plugins were told of.
func (n *NRI) spec(c *container.Container) *specs.Spec {
	n.mu.Lock()
	t := n.told[c.ID]
	var spec *specs.Spec
	if t != nil {
		spec = t.spec
	}
	n.mu.Unlock()
	if spec != nil {
		return spec
	}
	spec = n.bundleSpec(c)
	if t != nil && spec != nil {
		n.mu.Lock()
		t.spec = spec
		n.mu.Unlock()
	}
	return spec
}

// bundleSpec is the OCI spec of a container's bundle, nil if there is
// none (the node rebooted) or it cannot be read.
func (n *NRI) bundleSpec(c *container.Container) *specs.Spec {
	b, err := os.ReadFile(n.containers.SpecPath(c))
	if err != nil {
		return nil
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		klog.V(2).InfoS("Reading a container's OCI spec for NRI", "id", c.ID, "err", err)
		return nil
	}
	return &spec
}

func state(s container.State) api.ContainerState {
	switch s {
	case container.Created:
		return api.ContainerState_CONTAINER_CREATED
	case container.Running:
		return api.ContainerState_CONTAINER_RUNNING
	case container.Exited:
		return api.ContainerState_CONTAINER_STOPPED
	}
	return api.ContainerState_CONTAINER_UNKNOWN
}

// nriResources is CRI resources as plugins see them.
func nriResources(r *runtimeapi.LinuxContainerResources) *api.LinuxResources {
	if r == nil {
		return nil
	}
	out := &api.LinuxResources{
		Cpu:     &api.LinuxCPU{Cpus: r.GetCpusetCpus(), Mems: r.GetCpusetMems()},
		Memory:  &api.LinuxMemory{},
		Unified: r.GetUnified(),
	}
	if v := r.GetCpuShares(); v != 0 {
		out.Cpu.Shares = api.UInt64(uint64(v))
	}
	if v := r.GetCpuQuota(); v != 0 {
		out.Cpu.Quota = api.Int64(v)
	}
	if v := r.GetCpuPeriod(); v != 0 {
		out.Cpu.Period = api.UInt64(uint64(v))
	}
	if v := r.GetMemoryLimitInBytes(); v != 0 {
		out.Memory.Limit = api.Int64(v)
	}
	if v := r.GetMemorySwapLimitInBytes(); v != 0 {
		out.Memory.Swap = api.Int64(v)
	}
	for _, h := range r.GetHugepageLimits() {
		out.HugepageLimits = append(out.HugepageLimits, &api.HugepageLimit{PageSize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	return out
}

// withNRIResources is r (a copy) with what plugins set in u.
func withNRIResources(r *runtimeapi.LinuxContainerResources, u *api.LinuxResources) *runtimeapi.LinuxContainerResources {
	out := &runtimeapi.LinuxContainerResources{}
	if r != nil {
		out = proto.Clone(r).(*runtimeapi.LinuxContainerResources)
	}
	if u == nil {
		return out
	}
	if cpu := u.GetCpu(); cpu != nil {
		if v := cpu.GetShares(); v != nil {
			out.CpuShares = int64(v.GetValue())
		}
		if v := cpu.GetQuota(); v != nil {
			out.CpuQuota = v.GetValue()
		}
		if v := cpu.GetPeriod(); v != nil {
			out.CpuPeriod = int64(v.GetValue())
		}
		if cpu.GetCpus() != "" {
			out.CpusetCpus = cpu.GetCpus()
		}
		if cpu.GetMems() != "" {
			out.CpusetMems = cpu.GetMems()
		}
	}
	if mem := u.GetMemory(); mem != nil {
		if v := mem.GetLimit(); v != nil {
			out.MemoryLimitInBytes = v.GetValue()
		}
		if v := mem.GetSwap(); v != nil {
			out.MemorySwapLimitInBytes = v.GetValue()
		}
	}
	for _, h := range u.GetHugepageLimits() {
		replaced := false
		for _, o := range out.HugepageLimits {
			if o.PageSize == h.GetPageSize() {
				o.Limit, replaced = h.GetLimit(), true
			}
		}
		if !replaced {
			out.HugepageLimits = append(out.HugepageLimits, &runtimeapi.HugepageLimit{PageSize: h.GetPageSize(), Limit: h.GetLimit()})
		}
	}
	for k, v := range u.GetUnified() {
		if out.Unified == nil {
			out.Unified = map[string]string{}
		}
		out.Unified[k] = v
	}
	return out
}
