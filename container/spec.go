package container

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/containerd/cgroups/v3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/confine"
	"github.com/pier-runtime/pier/oci"
	"github.com/pier-runtime/pier/sandbox"
)

// OCIVersion is the ociVersion of the specs pier writes: Debian's crun 1.8
// refuses newer versions; runc accepts it.
const OCIVersion = "1.0.2"

// SpecInput is everything a container's OCI spec is built from.
type SpecInput struct {
	ID     string
	Config *runtimeapi.ContainerConfig
	Pod    *sandbox.Sandbox
	// PodInitPid is the pid whose PID namespace the container joins when
	// the pod shares one (Pod.Config.PodPID), or, for a container whose
	// namespace options ask for pid TARGET, the target container's pid.
	PodInitPid int
	Image      *v1.ConfigFile // the image config
	// Rootfs is the mounted root file system; the image's /etc/passwd and
	// /etc/group are read from it.
	Rootfs      string
	CgroupsPath string       // the runtime's form: /kubepods/pod123/<id> or kubepods-pod123.slice:pier:<id>
	Cgroups     *cgroup.Node // the node's cgroups: limits it lacks a controller for are dropped; nil keeps all
	// OOMScoreAdjFloor is pierd's own oom_score_adj: a lower requested
	// value is raised to it (lowering it needs CAP_SYS_RESOURCE).
	OOMScoreAdjFloor int
	// Confine is what confinement the node can apply; nil applies no
	// seccomp filter or AppArmor profile.
	Confine *confine.Node
	// Runtime is the handler's runtime: the mount options it applies and
	// the annotations it may see. nil allows no optional feature.
	Runtime *oci.Runtime
	// ImageVolumes map the container path of each image mount to the
	// host path to bind there (Container.imageVolumeSources).
	ImageVolumes map[string]string
	// HostDevices are the node's devices a privileged container gets
	// (HostDevices); Spec lists them itself when nil.
	HostDevices []specs.LinuxDevice
}

// SpecOpt changes a spec. Options are pure: what they need from the node
// or the image is read beforehand and passed in.
type SpecOpt func(*specs.Spec) error

// Spec builds the container's spec from all options in order. It also
// returns notes worth logging: settings it adjusted or ignored.
func Spec(in SpecInput) (*specs.Spec, []string, error) {
	if in.Config == nil || in.Pod == nil {
		return nil, nil, errors.New("a container spec needs a container config and a pod")
	}
	acc := &Accounts{}
	if in.Rootfs != "" {
		var err error
		if acc, err = ReadAccounts(in.Rootfs); err != nil {
			return nil, nil, err
		}
	}
	devs, err := LookupDevices(in.Config.GetDevices())
	if err != nil {
		return nil, nil, err
	}
	if in.Config.GetLinux().GetSecurityContext().GetPrivileged() && in.HostDevices == nil {
		if in.HostDevices, err = HostDevices(); err != nil {
			return nil, nil, fmt.Errorf("list the host's devices: %w", err)
		}
	}
	var notes []string
	note := func(n string) { notes = append(notes, n) }
	s := &specs.Spec{}
	for _, opt := range specOpts(in, acc, devs, nofileLimit(), hostCapabilities(), note) {
		if err := opt(s); err != nil {
			return nil, notes, err
		}
	}
	return s, notes, nil
}

// specOpts lists every option of a container, in the order they apply.
func specOpts(in SpecInput, acc *Accounts, devs []HostDevice, nofile uint64, allCaps []string, note func(string)) []SpecOpt {
	cfg, pod := in.Config, in.Pod
	sc := cfg.GetLinux().GetSecurityContext()
	res := cfg.GetLinux().GetResources()
	return []SpecOpt{
		WithBase(),
		WithNamespaces(pod, sc.GetNamespaceOptions(), in.PodInitPid),
		WithDefaultMounts(pod),
		WithDefaultCapabilities(),
		WithNofileLimit(nofile),
		WithCgroupsPath(in.CgroupsPath),
		WithHostname(pod),
		WithArgs(cfg, in.Image),
		WithEnv(cfg, in.Image, pod.Config.Hostname),
		WithCwd(cfg, in.Image),
		WithTerminal(cfg.GetTty()),
		WithUser(sc, imageConfig(in.Image).User, acc),
		WithMounts(cfg.GetMounts(), pod, sc.GetReadonlyRootfs(), in.Runtime.HasMountOption("rro"), in.ImageVolumes),
		WithDevices(devs),
		WithCapabilities(sc.GetCapabilities(), allCaps),
		WithMaskedPaths(sc.GetMaskedPaths(), sc.GetReadonlyPaths()),
		WithReadonlyRootfs(sc.GetReadonlyRootfs()),
		WithNoNewPrivs(sc.GetNoNewPrivs()),
		WithPrivileged(sc.GetPrivileged(), allCaps, in.HostDevices),
		WithReadonlySysfs(sc.GetPrivileged()),
		WithAmbientCapabilities(sc.GetCapabilities()),
		WithSecurityProfiles(sc, in.Confine, note),
		WithResources(res),
		WithResourcesFit(in.Cgroups),
		WithOOMScoreAdj(res, in.OOMScoreAdjFloor, note),
		WithAnnotations(cfg, pod, in.Runtime.AllowedAnnotation),
		WithCgroupNode(in.Cgroups),
	}
}

func process(s *specs.Spec) *specs.Process {
	if s.Process == nil {
		s.Process = &specs.Process{}
	}
	return s.Process
}

func linux(s *specs.Spec) *specs.Linux {
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	return s.Linux
}

func resources(s *specs.Spec) *specs.LinuxResources {
	l := linux(s)
	if l.Resources == nil {
		l.Resources = &specs.LinuxResources{}
	}
	return l.Resources
}

func imageConfig(img *v1.ConfigFile) v1.Config {
	if img == nil {
		return v1.Config{}
	}
	return img.Config
}

// WithBase sets the OCI version, the root "rootfs" (relative to the
// bundle), a process running as root in "/", and a device cgroup that
// denies every device (the runtime adds its standard ones: null, zero,
// tty...).
func WithBase() SpecOpt {
	return func(s *specs.Spec) error {
		s.Version = OCIVersion
		s.Root = &specs.Root{Path: "rootfs"}
		p := process(s)
		p.Cwd = "/"
		p.User = specs.User{}
		resources(s).Devices = []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}
		return nil
	}
}

// WithNamespaces puts the container in a mount namespace of its own, in
// the pod's pinned network, IPC and UTS namespaces (none of them where the
// pod shares the host's), in a PID namespace of its own, the pod's
// (joined through /proc/<podInitPid>/ns/pid), or the host's, and in the
// pod's pinned user namespace, with its mappings, when the pod has one.
func WithNamespaces(pod *sandbox.Sandbox, opts *runtimeapi.NamespaceOption, podInitPid int) SpecOpt {
	return func(s *specs.Spec) error {
		ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
		userns, err := podUserNamespace(pod, opts.GetUsernsOptions())
		if err != nil {
			return err
		}
		if userns != nil {
			ns = append(ns, specs.LinuxNamespace{Type: specs.UserNamespace, Path: pod.Namespaces["user"]})
			linux(s).UIDMappings, linux(s).GIDMappings = specIDMappings(userns.UIDs), specIDMappings(userns.GIDs)
		}
		switch {
		case pod.Config.HostPID:
		case pod.Config.PodPID || opts.GetPid() == runtimeapi.NamespaceMode_TARGET:
			if podInitPid <= 0 {
				return errors.New("the PID namespace to join has no process")
			}
			ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: fmt.Sprintf("/proc/%d/ns/pid", podInitPid)})
		default:
			ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
		}
		for _, k := range []struct {
			name string
			typ  specs.LinuxNamespaceType
			host bool
		}{
			{"net", specs.NetworkNamespace, pod.Config.HostNetwork},
			{"ipc", specs.IPCNamespace, pod.Config.HostIPC},
			{"uts", specs.UTSNamespace, pod.Config.HostNetwork},
		} {
			path := pod.Namespaces[k.name]
			switch {
			case k.host:
			case path == "":
				// Never fall back to the host's namespace.
				return fmt.Errorf("pod %s has no %s namespace", pod.ID, k.name)
			default:
				ns = append(ns, specs.LinuxNamespace{Type: k.typ, Path: path})
			}
		}
		linux(s).Namespaces = ns
		return nil
	}
}

// WithDefaultMounts mounts /proc, /dev, /dev/pts, /dev/mqueue, /sys and
// /sys/fs/cgroup (read-only; /sys through WithReadonlySysfs), and binds
// the pod's /dev/shm (the host's when the pod shares the host's IPC
// namespace).
func WithDefaultMounts(pod *sandbox.Sandbox) SpecOpt {
	return func(s *specs.Spec) error {
		shm := specs.Mount{Destination: "/dev/shm", Type: "bind", Options: []string{"rbind", "nosuid", "nodev", "noexec"}}
		switch {
		case pod.Config.HostIPC:
			shm.Source = "/dev/shm"
		case pod.Shm != "":
			shm.Source = pod.Shm
		default:
			shm = specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}}
		}
		s.Mounts = []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			// Read-only through WithReadonlySysfs, not here (see there).
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
			shm,
		}
		return nil
	}
}

// WithMaskedPaths masks and makes read-only exactly the paths the security
// context lists, as containerd does: kubelet sends the default lists for
// the Default proc mount and empty ones for Unmasked, which the wire cannot
// tell from unset; so a client that sends none gets none.
func WithMaskedPaths(masked, readonly []string) SpecOpt {
	return func(s *specs.Spec) error {
		l := linux(s)
		l.MaskedPaths = slices.Clone(masked)
		l.ReadonlyPaths = slices.Clone(readonly)
		return nil
	}
}

// defaultCapabilities is the container runtimes' default set.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// knownCapabilities are Linux's capabilities, by number.
var knownCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
	"CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// hostCapabilities are the capabilities pier can hand out: those of its
// own bounding set (a process cannot grant a capability it lacks; root on
// some nodes lacks CAP_SYS_RESOURCE), among those the kernel knows.
var hostCapabilities = sync.OnceValue(func() []string {
	known := knownCapabilities
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if n, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && n >= 0 && n < len(knownCapabilities) {
		known = knownCapabilities[:n+1]
	}
	bounding, ok := ownBoundingSet()
	if !ok {
		return known
	}
	var caps []string
	for i, c := range known {
		if bounding&(1<<uint(i)) != 0 {
			caps = append(caps, c)
		}
	}
	return caps
})

// ownBoundingSet reads CapBnd of this process.
func ownBoundingSet() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapBnd:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func setCapabilities(s *specs.Spec, caps []string) {
	process(s).Capabilities = &specs.LinuxCapabilities{
		Bounding:  slices.Clone(caps),
		Effective: slices.Clone(caps),
		Permitted: slices.Clone(caps),
	}
}

// WithDefaultCapabilities gives the default capability set.
func WithDefaultCapabilities() SpecOpt {
	return func(s *specs.Spec) error {
		setCapabilities(s, defaultCapabilities)
		return nil
	}
}

// capabilityName turns "net_admin" or "CAP_NET_ADMIN" into "CAP_NET_ADMIN".
func capabilityName(name string) (string, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	if !slices.Contains(knownCapabilities, n) {
		return "", fmt.Errorf("unknown capability %q", name)
	}
	return n, nil
}

// WithCapabilities adds and drops the capabilities of the security
// context, with or without the CAP_ prefix, in any case. "ALL" adds all
// of allCaps or drops all; the single names then apply on top, so that
// drop ALL + add NET_BIND_SERVICE leaves just that one.
func WithCapabilities(c *runtimeapi.Capability, allCaps []string) SpecOpt {
	return func(s *specs.Spec) error {
		if c == nil {
			return nil
		}
		isAll := func(n string) bool { return strings.EqualFold(n, "ALL") }
		var caps []string
		if pc := process(s).Capabilities; pc != nil {
			caps = slices.Clone(pc.Bounding)
		}
		if slices.ContainsFunc(c.GetAddCapabilities(), isAll) {
			caps = slices.Clone(allCaps)
		}
		if slices.ContainsFunc(c.GetDropCapabilities(), isAll) {
			caps = nil
		}
		for _, n := range c.GetAddCapabilities() {
			if isAll(n) {
				continue
			}
			name, err := capabilityName(n)
			if err != nil {
				return err
			}
			if !slices.Contains(caps, name) {
				caps = append(caps, name)
			}
		}
		for _, n := range c.GetDropCapabilities() {
			if isAll(n) {
				continue
			}
			name, err := capabilityName(n)
			if err != nil {
				return err
			}
			caps = slices.DeleteFunc(caps, func(c string) bool { return c == name })
		}
		setCapabilities(s, caps)
		return nil
	}
}

// WithNofileLimit sets RLIMIT_NOFILE, soft and hard.
func WithNofileLimit(n uint64) SpecOpt {
	return func(s *specs.Spec) error {
		p := process(s)
		p.Rlimits = slices.DeleteFunc(p.Rlimits, func(r specs.POSIXRlimit) bool { return r.Type == "RLIMIT_NOFILE" })
		p.Rlimits = append(p.Rlimits, specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Hard: n, Soft: n})
		return nil
	}
}

// nofileLimit is 1048576, or pierd's own hard limit if lower: raising a
// hard limit needs CAP_SYS_RESOURCE.
func nofileLimit() uint64 {
	const want = 1 << 20
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err == nil && rl.Max < want {
		return rl.Max
	}
	return want
}

// WithCgroupsPath sets the container's cgroup.
func WithCgroupsPath(path string) SpecOpt {
	return func(s *specs.Spec) error {
		linux(s).CgroupsPath = path
		return nil
	}
}

// WithHostname sets the pod's hostname, unless the pod shares the host's
// UTS namespace (a runtime cannot set a hostname there).
func WithHostname(pod *sandbox.Sandbox) SpecOpt {
	return func(s *specs.Spec) error {
		if pod.Namespaces["uts"] != "" && !pod.Config.HostNetwork {
			s.Hostname = pod.Config.Hostname
		}
		return nil
	}
}

// WithArgs sets the command line as kubelet expects it: the CRI command
// replaces the image's ENTRYPOINT, and then the CRI args (or nothing)
// replace its CMD; CRI args alone replace CMD and keep ENTRYPOINT; neither
// gives ENTRYPOINT + CMD.
func WithArgs(cfg *runtimeapi.ContainerConfig, img *v1.ConfigFile) SpecOpt {
	return func(s *specs.Spec) error {
		ic := imageConfig(img)
		command, args := cfg.GetCommand(), cfg.GetArgs()
		if len(command) == 0 {
			command = ic.Entrypoint
			if len(command) == 1 && command[0] == "" { // ENTRYPOINT [""] resets it
				command = nil
			}
			if len(args) == 0 {
				args = ic.Cmd
			}
		}
		argv := slices.Concat(command, args)
		if len(argv) == 0 {
			return errors.New("no command specified")
		}
		process(s).Args = argv
		return nil
	}
}

// defaultPath is PATH when the image sets none.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// WithEnv sets HOSTNAME, the image's environment (with a default PATH if
// it has none), and the CRI envs; a later variable replaces an earlier one
// of the same name.
func WithEnv(cfg *runtimeapi.ContainerConfig, img *v1.ConfigFile, hostname string) SpecOpt {
	return func(s *specs.Spec) error {
		var env []string
		index := map[string]int{}
		set := func(kv string) {
			name, _, _ := strings.Cut(kv, "=")
			if i, ok := index[name]; ok {
				env[i] = kv
				return
			}
			index[name] = len(env)
			env = append(env, kv)
		}
		set("HOSTNAME=" + hostname)
		for _, kv := range imageConfig(img).Env {
			set(kv)
		}
		if _, ok := index["PATH"]; !ok {
			set(defaultPath)
		}
		for _, kv := range cfg.GetEnvs() {
			if kv.GetKey() == "" {
				return errors.New("an environment variable has no name")
			}
			set(kv.GetKey() + "=" + string(kv.GetValue()))
		}
		process(s).Env = env
		return nil
	}
}

// WithCwd sets the working directory: the CRI's, else the image's, else "/".
func WithCwd(cfg *runtimeapi.ContainerConfig, img *v1.ConfigFile) SpecOpt {
	return func(s *specs.Spec) error {
		dir := cfg.GetWorkingDir()
		if dir == "" {
			dir = imageConfig(img).WorkingDir
		}
		if !strings.HasPrefix(dir, "/") {
			dir = "/" + dir
		}
		process(s).Cwd = dir
		return nil
	}
}

// WithTerminal gives the process a terminal.
func WithTerminal(tty bool) SpecOpt {
	return func(s *specs.Spec) error {
		process(s).Terminal = tty
		return nil
	}
}

// podFiles are the pod's files every container gets, by container path.
func podFiles(pod *sandbox.Sandbox) []struct{ dst, src string } {
	return []struct{ dst, src string }{
		{"/etc/hostname", pod.HostnamePath()},
		{"/etc/hosts", pod.HostsPath()},
		{"/etc/resolv.conf", pod.ResolvConfPath()},
	}
}

// PrepareMounts creates the host paths of the config's mounts that do not
// exist, as directories (as containerd does). The manager calls it before
// Spec; the options themselves touch nothing.
func PrepareMounts(cfg *runtimeapi.ContainerConfig) error {
	for _, m := range cfg.GetMounts() {
		src := m.GetHostPath()
		if src == "" {
			continue
		}
		if _, err := os.Stat(src); err == nil {
			continue
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("mount %s: %w", m.GetContainerPath(), err)
		}
		if err := os.MkdirAll(src, 0o755); err != nil {
			return fmt.Errorf("mount %s: create its host path: %w", m.GetContainerPath(), err)
		}
	}
	return nil
}

// WithMounts bind-mounts the CRI mounts and the pod's /etc/hostname,
// /etc/hosts and /etc/resolv.conf (those the CRI mounts do not provide;
// read-only when the root file system is). A CRI mount replaces a default
// mount of the same path, and a CRI /dev every default mount under /dev.
// Mounts are ordered so that a parent comes before what is mounted below
// it. Propagation: PRIVATE is rprivate, HOST_TO_CONTAINER rslave (and the
// root rslave), BIDIRECTIONAL rshared (and the root rshared). An image
// mount (an image volume) binds images[its container path], read-only.
func WithMounts(mounts []*runtimeapi.Mount, pod *sandbox.Sandbox, readonlyRootfs, rro bool, images map[string]string) SpecOpt {
	return func(s *specs.Spec) error {
		all := slices.Clone(mounts)
		given := map[string]bool{}
		for i, m := range mounts {
			if m.GetImage().GetImage() != "" {
				src, ok := images[m.GetContainerPath()]
				if !ok || src == "" || !m.GetReadonly() {
					return fmt.Errorf("mount %s: image volume %s is not mounted read-only", m.GetContainerPath(), m.GetImage().GetImage())
				}
				all[i] = &runtimeapi.Mount{ContainerPath: m.GetContainerPath(), HostPath: src, Readonly: true,
					RecursiveReadOnly: m.GetRecursiveReadOnly(), Propagation: m.GetPropagation()}
				m = all[i]
			}
			if m.GetContainerPath() == "" || m.GetHostPath() == "" {
				return fmt.Errorf("mount %q of %q: a mount needs a host path and a container path", m.GetContainerPath(), m.GetHostPath())
			}
			given[filepath.Clean(m.GetContainerPath())] = true
		}
		for _, f := range podFiles(pod) {
			if !given[f.dst] {
				all = append(all, &runtimeapi.Mount{ContainerPath: f.dst, HostPath: f.src, Readonly: readonlyRootfs})
			}
		}
		slices.SortStableFunc(all, func(a, b *runtimeapi.Mount) int {
			return pathDepth(a.GetContainerPath()) - pathDepth(b.GetContainerPath())
		})
		s.Mounts = slices.DeleteFunc(s.Mounts, func(m specs.Mount) bool {
			dst := filepath.Clean(m.Destination)
			return given[dst] || given["/dev"] && strings.HasPrefix(dst, "/dev/")
		})
		l := linux(s)
		for _, m := range all {
			opts := []string{"rbind"}
			switch m.GetPropagation() {
			case runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
				opts = append(opts, "rprivate")
			case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
				opts = append(opts, "rslave")
				if l.RootfsPropagation != "rshared" {
					l.RootfsPropagation = "rslave"
				}
			case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
				opts = append(opts, "rshared")
				l.RootfsPropagation = "rshared"
			default:
				return fmt.Errorf("mount %s: unknown propagation %v", m.GetContainerPath(), m.GetPropagation())
			}
			switch {
			case m.GetRecursiveReadOnly() && !m.GetReadonly():
				return fmt.Errorf("mount %s: recursive read-only needs read-only", m.GetContainerPath())
			case m.GetRecursiveReadOnly() && m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
				return fmt.Errorf("mount %s: recursive read-only needs private propagation", m.GetContainerPath())
			case m.GetRecursiveReadOnly() && !rro:
				return fmt.Errorf("mount %s: the runtime handler does not support recursive read-only mounts (it does not list \"rro\" in its features)", m.GetContainerPath())
			case m.GetRecursiveReadOnly():
				opts = append(opts, "rro")
			case m.GetReadonly():
				opts = append(opts, "ro")
			default:
				opts = append(opts, "rw")
			}
			s.Mounts = append(s.Mounts, specs.Mount{
				Destination: m.GetContainerPath(), Type: "bind", Source: m.GetHostPath(), Options: opts,
			})
		}
		return nil
	}
}

func pathDepth(p string) int {
	p = filepath.Clean("/" + p)
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

// HostDevice is a device of the node to create in the container.
type HostDevice struct {
	specs.LinuxDevice        // Path is the path in the container
	Access            string // cgroup access: "rwm" or a part of it
}

// LookupDevices finds the CRI devices on the node: their type, numbers,
// mode and owner. A host path that is a directory gives every device below
// it. Permissions default to "rwm".
func LookupDevices(devs []*runtimeapi.Device) ([]HostDevice, error) {
	var out []HostDevice
	for _, d := range devs {
		access := d.GetPermissions()
		if access == "" {
			access = "rwm"
		}
		if strings.Trim(access, "rwm") != "" {
			return nil, fmt.Errorf("device %s: permissions %q: want some of \"rwm\"", d.GetHostPath(), access)
		}
		if d.GetContainerPath() == "" {
			return nil, fmt.Errorf("device %s: no container path", d.GetHostPath())
		}
		src, err := filepath.EvalSymlinks(d.GetHostPath())
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", d.GetHostPath(), err)
		}
		fi, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", d.GetHostPath(), err)
		}
		if !fi.IsDir() {
			dev, err := hostDevice(src, d.GetContainerPath())
			if err != nil {
				return nil, err
			}
			out = append(out, HostDevice{LinuxDevice: dev, Access: access})
			continue
		}
		err = filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0 {
				return err
			}
			rel, _ := filepath.Rel(src, p)
			dev, err := hostDevice(p, filepath.Join(d.GetContainerPath(), rel))
			if err == nil {
				out = append(out, HostDevice{LinuxDevice: dev, Access: access})
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", d.GetHostPath(), err)
		}
	}
	return out, nil
}

func hostDevice(src, dst string) (specs.LinuxDevice, error) {
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err != nil {
		return specs.LinuxDevice{}, &os.PathError{Op: "stat", Path: src, Err: err}
	}
	var typ string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = "c"
	case unix.S_IFBLK:
		typ = "b"
	default:
		return specs.LinuxDevice{}, fmt.Errorf("%s is not a device", src)
	}
	mode := os.FileMode(st.Mode & 0o777)
	uid, gid := st.Uid, st.Gid
	return specs.LinuxDevice{
		Path: dst, Type: typ, Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev)),
		FileMode: &mode, UID: &uid, GID: &gid,
	}, nil
}

// WithDevices creates the devices in the container and allows them in
// its device cgroup.
func WithDevices(devs []HostDevice) SpecOpt {
	return func(s *specs.Spec) error {
		if len(devs) == 0 {
			return nil
		}
		l, r := linux(s), resources(s)
		for _, d := range devs {
			l.Devices = slices.DeleteFunc(l.Devices, func(x specs.LinuxDevice) bool { return x.Path == d.Path })
			l.Devices = append(l.Devices, d.LinuxDevice)
			major, minor := d.Major, d.Minor
			r.Devices = append(r.Devices, specs.LinuxDeviceCgroup{Allow: true, Type: d.Type, Major: &major, Minor: &minor, Access: d.Access})
		}
		return nil
	}
}

// WithReadonlyRootfs makes the root file system read-only.
func WithReadonlyRootfs(ro bool) SpecOpt {
	return func(s *specs.Spec) error {
		if s.Root == nil {
			s.Root = &specs.Root{Path: "rootfs"}
		}
		s.Root.Readonly = ro
		return nil
	}
}

// WithNoNewPrivs sets no_new_privs.
func WithNoNewPrivs(on bool) SpecOpt {
	return func(s *specs.Spec) error {
		process(s).NoNewPrivileges = on
		return nil
	}
}

// WithSecurityProfiles applies the seccomp filter and AppArmor profile the
// security context asks for (see package confine), or refuses them. It
// must come after the capabilities and privileges: the default seccomp
// profile allows what the capabilities grant. A nil node applies none, for
// specs built without a node. SELinux labels are refused where the node
// enforces SELinux (pier cannot apply them) and noted elsewhere, where
// they mean nothing.
func WithSecurityProfiles(sc *runtimeapi.LinuxContainerSecurityContext, n *confine.Node, note func(string)) SpecOpt {
	return func(s *specs.Spec) error {
		if n == nil {
			return nil
		}
		sec, err := n.Seccomp(sc, s)
		if err != nil {
			return err
		}
		linux(s).Seccomp = sec
		if process(s).ApparmorProfile, err = n.AppArmor(sc); err != nil {
			return err
		}
		if o := sc.GetSelinuxOptions(); o != nil && o.GetUser()+o.GetRole()+o.GetType()+o.GetLevel() != "" {
			if err := n.SELinux(); err != nil {
				return err
			}
			noteIf(note, "SELinux options ignored: SELinux is not enabled on this node")
		}
		return nil
	}
}

func noteIf(note func(string), n string) {
	if note != nil {
		note(n)
	}
}

// WithPrivileged makes a privileged container: every capability, no
// masked or read-only paths, writable /sys and /sys/fs/cgroup, the host's
// devices (hostDevs, from HostDevices) in its /dev, and every device
// allowed in its device cgroup. Seccomp and AppArmor are left off by
// WithSecurityProfiles.
func WithPrivileged(privileged bool, allCaps []string, hostDevs []specs.LinuxDevice) SpecOpt {
	return func(s *specs.Spec) error {
		if !privileged {
			return nil
		}
		setCapabilities(s, allCaps)
		l := linux(s)
		l.MaskedPaths, l.ReadonlyPaths = nil, nil
		resources(s).Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		for i, m := range s.Mounts {
			if m.Destination == "/sys" || m.Destination == "/sys/fs/cgroup" {
				opts := slices.DeleteFunc(slices.Clone(m.Options), func(o string) bool { return o == "ro" || o == "rw" })
				s.Mounts[i].Options = append(opts, "rw")
			}
		}
		for _, d := range hostDevs {
			if !slices.ContainsFunc(l.Devices, func(x specs.LinuxDevice) bool { return x.Path == d.Path }) {
				l.Devices = append(l.Devices, d)
			}
		}
		return nil
	}
}

// WithReadonlySysfs makes /sys read-only for an unprivileged container.
// It does so per mount, through the read-only paths, rather than by
// mounting sysfs read-only: the containers of a pod share its network
// namespace and so one sysfs superblock, which the first mount makes
// read-only for good; a privileged container created after an unprivileged
// one in the same pod would then find /sys read-only.
func WithReadonlySysfs(privileged bool) SpecOpt {
	return func(s *specs.Spec) error {
		l := linux(s)
		if !privileged && !slices.Contains(l.ReadonlyPaths, "/sys") {
			l.ReadonlyPaths = append(l.ReadonlyPaths, "/sys")
		}
		return nil
	}
}

// HostDevices lists the node's devices under /dev, as a privileged
// container gets them: every character and block device except those of
// the directories a container has its own of (pts, shm, mqueue, fd) and
// the console.
func HostDevices() ([]specs.LinuxDevice, error) {
	var out []specs.LinuxDevice
	err := filepath.WalkDir("/dev", func(p string, e fs.DirEntry, err error) error {
		switch {
		case err != nil:
			if p == "/dev" {
				return err
			}
			return nil // a device that vanished while listing
		case e.IsDir() && p != "/dev" && (slices.Contains([]string{"pts", "shm", "mqueue", "fd"}, e.Name()) || strings.HasPrefix(e.Name(), ".")):
			return fs.SkipDir
		case e.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0 || p == "/dev/console":
			return nil
		}
		d, err := hostDevice(p, p)
		if err == nil {
			out = append(out, d)
		}
		return nil
	})
	return out, err
}

// WithAmbientCapabilities raises the CRI's ambient capabilities: each goes
// into the ambient and inheritable sets, and into the bounding, permitted
// and effective sets where it is not yet (an ambient capability must be
// permitted and inheritable).
func WithAmbientCapabilities(c *runtimeapi.Capability) SpecOpt {
	return func(s *specs.Spec) error {
		if len(c.GetAddAmbientCapabilities()) == 0 {
			return nil
		}
		p := process(s)
		if p.Capabilities == nil {
			p.Capabilities = &specs.LinuxCapabilities{}
		}
		pc := p.Capabilities
		for _, n := range c.GetAddAmbientCapabilities() {
			name, err := capabilityName(n)
			if err != nil {
				return fmt.Errorf("ambient: %w", err)
			}
			for _, set := range []*[]string{&pc.Ambient, &pc.Inheritable, &pc.Bounding, &pc.Permitted, &pc.Effective} {
				if !slices.Contains(*set, name) {
					*set = append(*set, name)
				}
			}
		}
		return nil
	}
}

// WithResources sets the CRI resources: memory (and swap, if given), CPU
// shares, quota and period, cpusets, hugepage limits, and the cgroup v2
// unified map.
func WithResources(res *runtimeapi.LinuxContainerResources) SpecOpt {
	return func(s *specs.Spec) error {
		if res == nil {
			return nil
		}
		r := resources(s)
		if r.CPU == nil {
			r.CPU = &specs.LinuxCPU{}
		}
		if v := res.GetMemoryLimitInBytes(); v > 0 {
			if r.Memory == nil {
				r.Memory = &specs.LinuxMemory{}
			}
			r.Memory.Limit = &v
		}
		if v := res.GetMemorySwapLimitInBytes(); v != 0 {
			if r.Memory == nil {
				r.Memory = &specs.LinuxMemory{}
			}
			r.Memory.Swap = &v
		}
		if v := res.GetCpuShares(); v > 0 {
			shares := uint64(v)
			r.CPU.Shares = &shares
		}
		if v := res.GetCpuQuota(); v != 0 {
			r.CPU.Quota = &v
		}
		if v := res.GetCpuPeriod(); v > 0 {
			period := uint64(v)
			r.CPU.Period = &period
		}
		if v := res.GetCpusetCpus(); v != "" {
			r.CPU.Cpus = v
		}
		if v := res.GetCpusetMems(); v != "" {
			r.CPU.Mems = v
		}
		if *r.CPU == (specs.LinuxCPU{}) {
			r.CPU = nil
		}
		for _, h := range res.GetHugepageLimits() {
			r.HugepageLimits = append(r.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
		}
		if len(res.GetUnified()) > 0 {
			r.Unified = maps.Clone(res.GetUnified())
		}
		return nil
	}
}

// WithResourcesFit drops the limits whose cgroup controller the node lacks
// (cgroup.Node.Fit); nil keeps them all.
func WithResourcesFit(n *cgroup.Node) SpecOpt {
	return func(s *specs.Spec) error {
		if n == nil || s.Linux == nil {
			return nil
		}
		return n.Fit(s.Linux.Resources)
	}
}

// WithOOMScoreAdj sets the requested oom_score_adj, raised to floor (pierd's
// own) if lower, as containerd's restrict_oom_score_adj does.
func WithOOMScoreAdj(res *runtimeapi.LinuxContainerResources, floor int, note func(string)) SpecOpt {
	return func(s *specs.Spec) error {
		if res == nil {
			return nil
		}
		adj := min(max(int(res.GetOomScoreAdj()), -1000), 1000)
		if adj < floor {
			noteIf(note, fmt.Sprintf("oom_score_adj %d raised to %d, pierd's own: lowering it needs CAP_SYS_RESOURCE", adj, floor))
			adj = floor
		}
		process(s).OOMScoreAdj = &adj
		return nil
	}
}

// The annotations kubelet and CRI tools expect on a container.
const (
	annotationContainerType    = "io.kubernetes.cri.container-type"
	annotationSandboxID        = "io.kubernetes.cri.sandbox-id"
	annotationSandboxName      = "io.kubernetes.cri.sandbox-name"
	annotationSandboxNamespace = "io.kubernetes.cri.sandbox-namespace"
	annotationSandboxUID       = "io.kubernetes.cri.sandbox-uid"
	annotationContainerName    = "io.kubernetes.cri.container-name"
	annotationImageName        = "io.kubernetes.cri.image-name"
)

// scopeStopTimeout bounds how long systemd waits for a container's scope
// when systemd itself stops it (at shutdown) before it kills what is
// left: a container's PID 1 that has no SIGTERM handler never sees the
// SIGTERM, and the default, 90 s, would hold up every node shutdown. pier
// stops containers through their shims, never through systemd.
const scopeStopTimeout = "uint64 5000000" // microseconds, as runc and crun pass it to systemd

// WithCgroupNode fits the container to the node's cgroups: on cgroup v2 it
// gets a cgroup namespace of its own (as containerd and CRI-O give it), so
// that it sees its own cgroup as the root; with the systemd driver its
// scope gets a short stop timeout, and no CRI annotation may set systemd
// properties of the scope (runc and crun apply org.systemd.property.*
// annotations to it: a pod could lift its own limits). nil changes nothing.
func WithCgroupNode(n *cgroup.Node) SpecOpt {
	return func(s *specs.Spec) error {
		if n == nil {
			return nil
		}
		if n.Mode == cgroups.Unified && !slices.ContainsFunc(linux(s).Namespaces, func(ns specs.LinuxNamespace) bool { return ns.Type == specs.CgroupNamespace }) {
			s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})
		}
		maps.DeleteFunc(s.Annotations, func(k, _ string) bool { return strings.HasPrefix(k, "org.systemd.property.") })
		if n.Driver == cgroup.Systemd {
			if s.Annotations == nil {
				s.Annotations = map[string]string{}
			}
			s.Annotations["org.systemd.property.TimeoutStopUSec"] = scopeStopTimeout
		}
		return nil
	}
}

// WithAnnotations copies the CRI annotations that allowed accepts into
// the spec (runtimes act on some: a pod must not change its own
// confinement through them; nil accepts none), and sets the container's
// io.kubernetes.cri.* ones.
func WithAnnotations(cfg *runtimeapi.ContainerConfig, pod *sandbox.Sandbox, allowed func(string) bool) SpecOpt {
	return func(s *specs.Spec) error {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		for k, v := range cfg.GetAnnotations() {
			if allowed != nil && allowed(k) {
				s.Annotations[k] = v
			}
		}
		img := cfg.GetImage().GetUserSpecifiedImage()
		if img == "" {
			img = cfg.GetImage().GetImage()
		}
		maps.Copy(s.Annotations, map[string]string{
			annotationContainerType:    "container",
			annotationSandboxID:        pod.ID,
			annotationSandboxName:      pod.Config.Name,
			annotationSandboxNamespace: pod.Config.Namespace,
			annotationSandboxUID:       pod.Config.UID,
			annotationContainerName:    cfg.GetMetadata().GetName(),
			annotationImageName:        img,
		})
		return nil
	}
}
