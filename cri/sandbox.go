package cri

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cni"
	"github.com/pier-runtime/pier/sandbox"
)

// sandboxConfig translates a CRI pod config.
func sandboxConfig(c *runtimeapi.PodSandboxConfig, handler string) sandbox.Config {
	md := c.GetMetadata()
	linux := c.GetLinux()
	ns := linux.GetSecurityContext().GetNamespaceOptions()
	cfg := sandbox.Config{
		Name: md.GetName(), Namespace: md.GetNamespace(), UID: md.GetUid(), Attempt: md.GetAttempt(),
		Hostname: c.GetHostname(), LogDirectory: c.GetLogDirectory(),
		Labels: c.GetLabels(), Annotations: c.GetAnnotations(),
		CgroupParent: linux.GetCgroupParent(), Sysctls: linux.GetSysctls(),
		HostNetwork:    ns.GetNetwork() == runtimeapi.NamespaceMode_NODE,
		HostIPC:        ns.GetIpc() == runtimeapi.NamespaceMode_NODE,
		HostPID:        ns.GetPid() == runtimeapi.NamespaceMode_NODE,
		PodPID:         ns.GetPid() == runtimeapi.NamespaceMode_POD,
		RuntimeHandler: handler,
	}
	if u := ns.GetUsernsOptions(); u != nil {
		cfg.UserNamespace = &sandbox.UserNamespace{Mode: u.GetMode().String(), UIDs: idMappings(u.GetUids()), GIDs: idMappings(u.GetGids())}
	}
	if d := c.GetDnsConfig(); d != nil {
		cfg.DNS = &sandbox.DNSConfig{Servers: d.Servers, Searches: d.Searches, Options: d.Options}
	}
	for _, p := range c.GetPortMappings() {
		cfg.PortMappings = append(cfg.PortMappings, cni.PortMapping{
			HostPort: p.HostPort, ContainerPort: p.ContainerPort,
			Protocol: strings.ToLower(p.Protocol.String()), HostIP: p.HostIp,
		})
	}
	return cfg
}

func idMappings(ms []*runtimeapi.IDMapping) []sandbox.IDMapping {
	var out []sandbox.IDMapping
	for _, m := range ms {
		out = append(out, sandbox.IDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetLength()})
	}
	return out
}

// usernsOptions is the CRI form of a pod's user namespace.
func usernsOptions(u *sandbox.UserNamespace) *runtimeapi.UserNamespace {
	if u == nil {
		return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}
	}
	return &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: criIDMappings(u.UIDs), Gids: criIDMappings(u.GIDs)}
}

func criIDMappings(ms []sandbox.IDMapping) []*runtimeapi.IDMapping {
	var out []*runtimeapi.IDMapping
	for _, m := range ms {
		out = append(out, &runtimeapi.IDMapping{ContainerId: m.ContainerID, HostId: m.HostID, Length: m.Size})
	}
	return out
}

func podState(s sandbox.State) runtimeapi.PodSandboxState {
	if s == sandbox.Ready {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

func podMetadata(c sandbox.Config) *runtimeapi.PodSandboxMetadata {
	return &runtimeapi.PodSandboxMetadata{Name: c.Name, Namespace: c.Namespace, Uid: c.UID, Attempt: c.Attempt}
}

func namespaceMode(node, pod bool) runtimeapi.NamespaceMode {
	switch {
	case node:
		return runtimeapi.NamespaceMode_NODE
	case pod:
		return runtimeapi.NamespaceMode_POD
	}
	return runtimeapi.NamespaceMode_CONTAINER
}

// podStatus is the CRI status of a sandbox.
func podStatus(sb *sandbox.Sandbox) *runtimeapi.PodSandboxStatus {
	c := sb.Config
	st := &runtimeapi.PodSandboxStatus{
		Id: sb.ID, Metadata: podMetadata(c), State: podState(sb.State), CreatedAt: sb.CreatedAt.UnixNano(),
		Labels: c.Labels, Annotations: c.Annotations, RuntimeHandler: c.RuntimeHandler,
		Network: &runtimeapi.PodSandboxNetworkStatus{},
		Linux: &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{
			Network:       namespaceMode(c.HostNetwork, true),
			Pid:           namespaceMode(c.HostPID, c.PodPID),
			Ipc:           namespaceMode(c.HostIPC, true),
			UsernsOptions: usernsOptions(c.UserNamespace),
		}}},
	}
	if len(sb.IPs) > 0 {
		st.Network.Ip = sb.IPs[0]
		for _, ip := range sb.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	return st
}

// podVerboseInfo is a verbose PodSandboxStatus's "info": the pod's record,
// where "namespaces" names the file of each namespace its containers join
// (the pinned net, ipc, uts and user namespaces, and the pid namespace of
// the pod's init where its containers share one), for nsenter --net= etc.;
// and "cniResult", the CNI result of its network attachment (interfaces,
// IPs, routes, DNS), as containerd shows it. There is no "pid", as
// containerd's pause process has: pier runs no pause process, and the pod
// init ("initPid") sits in network, IPC and UTS namespaces of its own, so
// nsenter -t on it would enter the wrong ones.
func (s *RuntimeService) podVerboseInfo(sb *sandbox.Sandbox) (map[string]string, error) {
	info, err := recordFields(sb)
	if err != nil {
		return nil, err
	}
	ns := maps.Clone(sb.Namespaces)
	if sb.Config.PodPID && !sb.Config.HostPID && sb.InitAlive() {
		if ns == nil {
			ns = map[string]string{}
		}
		ns["pid"] = fmt.Sprintf("/proc/%d/ns/pid", sb.InitPid)
	}
	if ns != nil {
		info["namespaces"], _ = json.Marshal(ns)
	}
	if s.opts.Network != nil && !sb.Config.HostNetwork {
		res, err := s.opts.Network.CachedResult(sb.ID)
		if err != nil {
			klog.V(2).InfoS("Pod's CNI result", "id", sb.ID, "err", err)
		} else if res != nil {
			info["cniResult"] = res
		}
	}
	return infoMap(info)
}
