// Package cgroup knows the node's cgroups: the layout (v1, hybrid or v2)
// and its controllers, detected once at start-up, and the cgroup driver
// (cgroupfs or systemd), which decides where a container's cgroup is and
// how the OCI runtime is told of it. It fits a container's resource limits
// to the controllers the node has.
package cgroup

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/klog/v2"
)

// The cgroup drivers, as kubelet and the runtimes name them.
const (
	Cgroupfs = "cgroupfs"
	Systemd  = "systemd"
)

// Root is where the host's cgroup hierarchies are mounted.
const Root = "/sys/fs/cgroup"

// ErrInvalid reports resources the node can never apply.
var ErrInvalid = errors.New("invalid cgroup resources")

// Node is the node's cgroup set-up.
type Node struct {
	Mode   cgroups.CGMode
	Driver string // Cgroupfs or Systemd
	// Controllers are those a container's limits can use: on v2 the
	// root's cgroup.controllers, on v1 and hybrid the v1 hierarchies (a
	// runtime's v1 cgroup manager ignores the v2 one). "swap" stands for
	// swap accounting (memory.memsw.* or memory.swap.max).
	Controllers map[string]bool

	warned sync.Map // controller -> struct{}: dropped limits already logged
}

// systemd's sockets: the directory that exists when systemd is PID 1 and
// the system bus, through which runc and crun create scopes.
var (
	systemdRunDir = "/run/systemd/system"
	systemBus     = "/run/dbus/system_bus_socket"
)

// Detect reads the node's cgroup layout and resolves driver: "systemd",
// "cgroupfs", or "" (auto) for systemd where systemd is PID 1 and its bus
// is reachable, cgroupfs elsewhere. Asking for systemd where it is not is
// an error.
func Detect(driver string) (*Node, error) {
	n := &Node{Mode: cgroups.Mode()}
	if n.Mode == cgroups.Unavailable {
		return nil, fmt.Errorf("no cgroup file system is mounted at %s: containers cannot be limited", Root)
	}
	switch driver {
	case "":
		n.Driver = Cgroupfs
		if err := systemdReachable(); err == nil {
			n.Driver = Systemd
		} else {
			klog.V(2).InfoS("Using the cgroupfs cgroup driver", "reason", err.Error())
		}
	case Systemd:
		if err := systemdReachable(); err != nil {
			return nil, fmt.Errorf("cgroup_driver is systemd, but %v: set cgroup_driver = \"cgroupfs\", or leave it empty to choose by the node", err)
		}
		n.Driver = Systemd
	case Cgroupfs:
		n.Driver = Cgroupfs
	default:
		return nil, fmt.Errorf("cgroup driver %q: want systemd, cgroupfs or empty", driver)
	}
	var err error
	if n.Controllers, err = controllers(n.Mode); err != nil {
		return nil, err
	}
	return n, nil
}

// systemdReachable is nil where systemd runs as PID 1 and the system bus
// answers.
func systemdReachable() error {
	if _, err := os.Stat(systemdRunDir); err != nil {
		return errors.New("systemd is not PID 1 on this node")
	}
	c, err := net.DialTimeout("unix", systemBus, 2*time.Second)
	if err != nil {
		return fmt.Errorf("the system bus %s does not answer (is dbus running?): %v", systemBus, err)
	}
	c.Close()
	return nil
}

// controllers lists the controllers a container's limits can use.
func controllers(mode cgroups.CGMode) (map[string]bool, error) {
	have := map[string]bool{}
	if mode == cgroups.Unified {
		b, err := os.ReadFile(filepath.Join(Root, "cgroup.controllers"))
		if err != nil {
			return nil, fmt.Errorf("read the cgroup v2 controllers: %w", err)
		}
		for _, c := range strings.Fields(string(b)) {
			have[c] = true
		}
		// The root has no memory.swap.max; any child with memory does.
		if m, _ := filepath.Glob(filepath.Join(Root, "*", "memory.swap.max")); len(m) > 0 {
			have["swap"] = true
		}
		return have, nil
	}
	hier, err := cgroup1.ParseCgroupFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("read the cgroup v1 hierarchies: %w", err)
	}
	for c := range hier {
		if c != "" && !strings.HasPrefix(c, "name=") {
			have[c] = true
		}
	}
	if _, err := os.Stat(filepath.Join(Root, "memory", "memory.memsw.limit_in_bytes")); err == nil {
		have["swap"] = true
	}
	return have, nil
}

// Layout names the node's cgroup layout for people.
func (n *Node) Layout() string {
	switch n.Mode {
	case cgroups.Unified:
		return "v2 (unified)"
	case cgroups.Hybrid:
		return "hybrid (v1, with a v2 hierarchy that containers do not use)"
	case cgroups.Legacy:
		return "v1 (legacy)"
	}
	return "unavailable"
}

// Info is the cgroup set-up as Status' verbose info shows it.
func (n *Node) Info() map[string]string {
	return map[string]string{
		"cgroupLayout":      n.Layout(),
		"cgroupDriver":      n.Driver,
		"cgroupControllers": strings.Join(slices.Sorted(maps.Keys(n.Controllers)), " "),
	}
}

// Fit drops from r the limits whose controller the node lacks, logging
// each such controller once for the node's life (as containerd's
// tolerate_missing_hugetlb_controller does for hugepages), so that the
// container still runs. Unified (cgroup v2) keys on a node without cgroup
// v2 can never be applied: that is ErrInvalid.
func (n *Node) Fit(r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	if len(r.Unified) > 0 && n.Mode != cgroups.Unified {
		return fmt.Errorf("%w: unified keys %s need cgroup v2; this node's cgroup layout is %s",
			ErrInvalid, strings.Join(slices.Sorted(maps.Keys(r.Unified)), ", "), n.Layout())
	}
	if len(r.HugepageLimits) > 0 && !n.Controllers["hugetlb"] {
		n.drop("hugetlb", "hugepage limits")
		r.HugepageLimits = nil
	}
	if m := r.Memory; m != nil {
		if m.Swap != nil && !n.Controllers["swap"] {
			n.drop("swap", "swap limits (the kernel does no swap accounting)")
			m.Swap = nil
		}
		if !n.Controllers["memory"] {
			n.drop("memory", "memory limits")
			r.Memory = nil
		}
	}
	if c := r.CPU; c != nil {
		if (c.Shares != nil || c.Quota != nil || c.Period != nil || c.RealtimePeriod != nil || c.RealtimeRuntime != nil || c.Idle != nil) && !n.Controllers["cpu"] {
			n.drop("cpu", "CPU shares and quota")
			c.Shares, c.Quota, c.Period, c.RealtimePeriod, c.RealtimeRuntime, c.Idle = nil, nil, nil, nil, nil, nil
		}
		if (c.Cpus != "" || c.Mems != "") && !n.Controllers["cpuset"] {
			n.drop("cpuset", "cpusets")
			c.Cpus, c.Mems = "", ""
		}
		if *c == (specs.LinuxCPU{}) {
			r.CPU = nil
		}
	}
	if r.Pids != nil && !n.Controllers["pids"] {
		n.drop("pids", "pid limits")
		r.Pids = nil
	}
	blkio := "blkio"
	if n.Mode == cgroups.Unified {
		blkio = "io"
	}
	if r.BlockIO != nil && !n.Controllers[blkio] {
		n.drop(blkio, "block I/O limits")
		r.BlockIO = nil
	}
	return nil
}

func (n *Node) drop(controller, what string) {
	if _, seen := n.warned.LoadOrStore(controller, struct{}{}); !seen {
		klog.Warningf("This node has no %s cgroup controller that containers can use (cgroup layout %s): %s are dropped and containers run without them. Logged once.",
			controller, n.Layout(), what)
	}
}
