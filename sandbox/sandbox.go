// Package sandbox runs pod sandboxes without a pause process: pierd creates
// the pod's network, IPC and UTS namespaces and pins them by bind mount
// under the state directory, sets the pod's hostname and namespaced sysctls
// inside them, calls CNI for the pod network, writes the pod's hostname,
// hosts and resolv.conf files, and mounts its /dev/shm. Containers join
// these namespaces later.
//
// Each pod has a persistent directory <root>/<id>/ (pod.json, hostname,
// hosts, resolv.conf) and a volatile one <state>/<id>/ (ns/net, ns/ipc,
// ns/uts, shm). pod.json is written before anything is created, marked
// "creating", so that a pierd killed half-way through RunPodSandbox finds
// and undoes the half-made pod at its next start.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/cni"
	"github.com/pier-runtime/pier/internal/atomicfile"
	"github.com/pier-runtime/pier/internal/ids"
	"github.com/pier-runtime/pier/internal/proc"
)

// Sentinel errors; the CRI layer maps them to gRPC codes.
var (
	ErrNotFound      = errors.New("pod sandbox not found")
	ErrAlreadyExists = errors.New("pod sandbox already exists")
	ErrInvalid       = errors.New("invalid pod sandbox config")
)

// State is a sandbox's state, named as in the CRI.
type State string

const (
	Ready    State = "SANDBOX_READY"
	NotReady State = "SANDBOX_NOTREADY"
)

const recordVersion = 1

// dirMode is the mode of a pod's directories: root's alone. Containers get
// its files by bind mount, which needs no access to the directory; the
// files themselves (hostname, hosts, resolv.conf) are readable by all, for
// containers that run as other users.
const dirMode = 0o700

// DNSConfig is the pod's resolv.conf.
type DNSConfig struct {
	Servers  []string `json:"servers,omitempty"`
	Searches []string `json:"searches,omitempty"`
	Options  []string `json:"options,omitempty"`
}

// Config is what a pod asks for.
type Config struct {
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	UID            string            `json:"uid"`
	Attempt        uint32            `json:"attempt"`
	Hostname       string            `json:"hostname,omitempty"`
	LogDirectory   string            `json:"logDirectory,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	DNS            *DNSConfig        `json:"dns,omitempty"`
	PortMappings   []cni.PortMapping `json:"portMappings,omitempty"`
	CgroupParent   string            `json:"cgroupParent,omitempty"`
	Sysctls        map[string]string `json:"sysctls,omitempty"`
	HostNetwork    bool              `json:"hostNetwork,omitempty"`
	HostIPC        bool              `json:"hostIPC,omitempty"`
	HostPID        bool              `json:"hostPID,omitempty"`
	PodPID         bool              `json:"podPID,omitempty"` // one PID namespace for all containers
	RuntimeHandler string            `json:"runtimeHandler,omitempty"`
	// UserNamespace is the pod's user namespace (CRI userns_options); nil,
	// or mode NODE, is the host's.
	UserNamespace *UserNamespace `json:"userNamespace,omitempty"`
}

// Sandbox is a pod sandbox: its config and what pier made for it.
type Sandbox struct {
	Version    int               `json:"version"`
	ID         string            `json:"id"`
	Config     Config            `json:"config"`
	State      State             `json:"state"`
	Creating   bool              `json:"creating,omitempty"`
	CreatedAt  time.Time         `json:"createdAt"`
	Network    string            `json:"network,omitempty"` // CNI network name
	IPs        []string          `json:"ips,omitempty"`
	Namespaces map[string]string `json:"namespaces,omitempty"` // pinned paths, by "net", "ipc", "uts"
	Shm        string            `json:"shm,omitempty"`        // the pod's /dev/shm
	InitPid    int               `json:"initPid,omitempty"`    // pier-shim, PID 1 of the pod's PID namespace (PodPID)
	InitStart  uint64            `json:"initStart,omitempty"`  // its start time (proc.StartTime), against pid reuse
	InitBoot   string            `json:"initBoot,omitempty"`   // the boot it ran in (proc.BootID); "" in an older pier's records
	Dir        string            `json:"dir"`                  // hostname, hosts, resolv.conf
	// Resources, as UpdatePodSandboxResources last set them (see UpdateResources).
	Resources *PodResources `json:"resources,omitempty"`
}

// Options configure a Manager.
type Options struct {
	Root       string       // persistent pod directories, e.g. /var/lib/pier/pods
	State      string       // volatile pod directories, e.g. /run/pier/pods
	CNI        Network      // nil: pods with a network of their own cannot be run
	Cgroups    *cgroup.Node // the node's cgroup driver: the form cgroup parents take
	ResolvConf string       // the node's resolv.conf, default /etc/resolv.conf
	Hosts      string       // the node's hosts file, default /etc/hosts
	ShmSize    int64        // bytes of a pod's /dev/shm, default 64 MiB
	// StartPodInit starts the init process of a pod whose containers share
	// one PID namespace (pier-shim), or that has a user namespace of its
	// own, and returns its pid.
	StartPodInit func(podID string, opts proc.PodInitOptions) (int, error)
	// IDMapDirs are directories whose file systems the containers of pods
	// with user namespaces of their own are mounted idmapped from (the
	// image layers', the containers' state): UserNamespaces checks them.
	// Default: State.
	IDMapDirs []string
	// OnEvent, if set, is told of each pod created and started (together,
	// once RunPodSandbox made it), stopped and deleted, once the change is
	// recorded (package events), in the order of the changes: it must be
	// quick and must not call the manager.
	OnEvent EventFunc
	// Hooks, if set, are told of each pod made, stopped and removed (NRI
	// plugins): see Hooks.
	Hooks Hooks
}

// Hooks are told of a pod's life, outside the manager's lock; each may
// block for as long as its own timeouts allow.
type Hooks interface {
	// Block holds off a change of Hooks' audience (a plugin that joins
	// and is told of the pods there are) until unblock: Run holds it from
	// before RunPod until the pod is published or undone.
	Block() (unblock func())
	// RunPod is told of a pod made, before it is published (listed, or
	// given containers); an error undoes the pod and fails Run.
	RunPod(ctx context.Context, sb *Sandbox) error
	// StopPod is told of a ready pod stopped, once, before its network and
	// namespaces are released; RemovePod of a pod removed, before its
	// files are deleted. Their errors are the hooks' to log.
	StopPod(ctx context.Context, sb *Sandbox)
	RemovePod(ctx context.Context, sb *Sandbox)
}

// noHooks are the Hooks of a manager given none.
type noHooks struct{}

func (noHooks) Block() func()                          { return func() {} }
func (noHooks) RunPod(context.Context, *Sandbox) error { return nil }
func (noHooks) StopPod(context.Context, *Sandbox)      {}
func (noHooks) RemovePod(context.Context, *Sandbox)    {}

// Network attaches pods to the node's network; *cni.Manager is one.
type Network interface {
	Setup(ctx context.Context, pod cni.Pod) (*cni.Result, error)
	Teardown(ctx context.Context, pod cni.Pod) error
}

// Manager runs the node's pod sandboxes.
//
// Locking: mu guards the maps and the pod pointers in them, and is never
// held across a CNI call, a process start or kill, or file I/O. A pod's
// Sandbox is never changed once published: a change is saved as a new copy,
// then swapped in under mu, so List and Get copy a consistent record. A
// pod's own lock (pod.op) serialises the calls that change it (Stop,
// Remove), and is held across their I/O; it never waits for mu while mu
// waits for it (mu is taken inside op, briefly, never the other way).
type Manager struct {
	opts Options
	usernsProbe

	mu    sync.Mutex
	pods  map[string]*pod
	names map[string]*reservation // by name_namespace_uid_attempt
}

// pod is a published sandbox and the lock of the calls that change it.
type pod struct {
	op sync.Mutex // held by Stop and Remove of this pod, across their I/O
	sb *Sandbox   // replaced under Manager.mu, never modified in place
}

// reservation holds a pod name while its sandbox is made, and after.
type reservation struct {
	id      string
	done    chan struct{} // closed when RunPodSandbox finished
	err     error
	claimed bool // a client has been given the id
}

// New loads the pods recorded under opts.Root, undoing any that a crash
// left half-made.
func New(opts Options) (*Manager, error) {
	if opts.ResolvConf == "" {
		opts.ResolvConf = "/etc/resolv.conf"
	}
	if opts.Hosts == "" {
		opts.Hosts = "/etc/hosts"
	}
	if opts.ShmSize == 0 {
		opts.ShmSize = 64 << 20
	}
	if len(opts.IDMapDirs) == 0 {
		opts.IDMapDirs = []string{opts.State}
	}
	if opts.Hooks == nil {
		opts.Hooks = noHooks{}
	}
	m := &Manager{opts: opts, pods: map[string]*pod{}, names: map[string]*reservation{}}
	for _, d := range []string{opts.Root, opts.State} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, err
		}
	}
	if err := m.load(); err != nil {
		return nil, err
	}
	return m, nil
}

// loadParallelism is how many interrupted pods load undoes at once.
const loadParallelism = 8

func (m *Manager) load() error {
	entries, err := os.ReadDir(m.opts.Root)
	if err != nil {
		return err
	}
	// Pods whose creation was interrupted are undone a few at a time (each
	// a CNI DEL, which may wait for a plugin), before pierd serves.
	var undo errgroup.Group
	undo.SetLimit(loadParallelism)
	for _, e := range entries {
		dir := filepath.Join(m.opts.Root, e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			os.RemoveAll(dir)
			continue
		}
		os.Chmod(dir, dirMode) // made by an older pier, with 0711
		var sb Sandbox
		if err := readJSON(filepath.Join(dir, "pod.json"), &sb); err != nil || sb.Version != recordVersion {
			klog.ErrorS(err, "Dropping unreadable pod record", "dir", dir)
			os.RemoveAll(dir)
			continue
		}
		if sb.Creating {
			klog.InfoS("Undoing a pod sandbox whose creation was interrupted", "id", sb.ID, "pod", sb.Config.Namespace+"/"+sb.Config.Name)
			// The record was written before the namespaces were made.
			volatile := filepath.Join(m.opts.State, sb.ID)
			if len(sb.Namespaces) == 0 {
				sb.Namespaces = pinsIn(filepath.Join(volatile, "ns"))
			}
			if sb.Shm == "" {
				sb.Shm = filepath.Join(volatile, "shm")
			}
			undo.Go(func() error {
				m.teardown(context.Background(), &sb)
				m.deleteFiles(&sb)
				return nil
			})
			continue
		}
		if sb.State == Ready && (!m.namespacesPinned(&sb) || sb.InitPid > 0 && !sb.InitAlive()) {
			// The node rebooted: the pod's namespaces are gone.
			sb.State = NotReady
		}
		m.pods[sb.ID] = &pod{sb: &sb}
		m.names[nameOf(sb.Config)] = &reservation{id: sb.ID, done: closed(), claimed: true}
	}
	undo.Wait()
	// Volatile directories without a record: a crash before pod.json was written.
	states, _ := os.ReadDir(m.opts.State)
	for _, e := range states {
		if m.pods[e.Name()] == nil {
			sb := &Sandbox{ID: e.Name(), Creating: true, Namespaces: pinsIn(filepath.Join(m.opts.State, e.Name(), "ns")), Shm: filepath.Join(m.opts.State, e.Name(), "shm")}
			undo.Go(func() error {
				m.teardown(context.Background(), sb)
				os.RemoveAll(filepath.Join(m.opts.State, sb.ID))
				return nil
			})
		}
	}
	undo.Wait()
	klog.InfoS("Pod sandboxes loaded", "pods", len(m.pods))
	return nil
}

func closed() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

func pinsIn(dir string) map[string]string {
	pins := map[string]string{}
	for _, k := range nsKinds {
		p := filepath.Join(dir, k.name)
		if _, err := os.Lstat(p); err == nil {
			pins[k.name] = p
		}
	}
	return pins
}

func (m *Manager) namespacesPinned(sb *Sandbox) bool {
	for _, p := range sb.Namespaces {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil || st.Type != unix.NSFS_MAGIC {
			return false
		}
	}
	return true
}

// nameOf is the name kubelet reserves a pod under.
func nameOf(c Config) string {
	return fmt.Sprintf("%s_%s_%s_%d", c.Name, c.Namespace, c.UID, c.Attempt)
}

// Run creates and starts a pod sandbox. If a RunPodSandbox of the same pod
// is still running, or finished after its client gave up, Run returns that
// sandbox: kubelet retries a call that timed out.
func (m *Manager) Run(ctx context.Context, cfg Config) (*Sandbox, error) {
	if err := m.validate(&cfg); err != nil {
		return nil, err
	}
	name := nameOf(cfg)
	m.mu.Lock()
	if r := m.names[name]; r != nil {
		m.mu.Unlock()
		return m.retry(ctx, name, r)
	}
	r := &reservation{id: ids.New(), done: make(chan struct{})}
	m.names[name] = r
	m.mu.Unlock()

	unblock := m.opts.Hooks.Block()
	defer unblock()
	sb, err := m.create(ctx, r.id, cfg)
	m.mu.Lock()
	r.err = err
	if err != nil {
		delete(m.names, name)
	} else {
		m.pods[sb.ID] = &pod{sb: sb}
		// A client that gave up will retry: keep the id for it.
		r.claimed = ctx.Err() == nil
	}
	close(r.done)
	if err == nil {
		m.publishRun(sb)
	}
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return sb.copy(), nil
}

// retry answers a RunPodSandbox for a name that is taken.
func (m *Manager) retry(ctx context.Context, name string, r *reservation) (*Sandbox, error) {
	select {
	case <-r.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.err != nil {
		return nil, r.err
	}
	if r.claimed {
		return nil, fmt.Errorf("%w: pod %s is taken by sandbox %s: remove it first", ErrAlreadyExists, name, r.id)
	}
	p := m.pods[r.id]
	if p == nil || m.names[name] != r {
		// Removed in the meantime.
		return nil, fmt.Errorf("%w: %s was removed", ErrNotFound, r.id)
	}
	r.claimed = true
	klog.InfoS("Returning the pod sandbox made for a RunPodSandbox that timed out", "id", r.id, "pod", name)
	return p.sb.copy(), nil
}

// create makes the sandbox; on any failure it undoes what it made.
func (m *Manager) create(ctx context.Context, id string, cfg Config) (sb *Sandbox, err error) {
	start := time.Now()
	sb = &Sandbox{
		Version: recordVersion, ID: id, Config: cfg, State: NotReady, Creating: true,
		CreatedAt: time.Now(), Dir: filepath.Join(m.opts.Root, id),
	}
	if err := os.MkdirAll(sb.Dir, dirMode); err != nil {
		return nil, err
	}
	if err := m.saveDurably(sb); err != nil {
		os.RemoveAll(sb.Dir)
		return nil, err
	}
	defer func() {
		if err != nil {
			m.teardown(context.Background(), sb)
			m.deleteFiles(sb)
		}
	}()
	volatile := filepath.Join(m.opts.State, id)
	if err := os.Mkdir(volatile, dirMode); err != nil {
		return sb, err
	}
	if cfg.Hostname == "" || cfg.HostNetwork {
		if cfg.Hostname, err = os.Hostname(); err != nil {
			return sb, err
		}
		sb.Config.Hostname = cfg.Hostname
	}
	if cfg.UserNamespace != nil {
		if err := m.makeUserNamespaces(sb, filepath.Join(volatile, "ns")); err != nil {
			return sb, err
		}
	} else {
		want := map[string]bool{"net": !cfg.HostNetwork, "ipc": !cfg.HostIPC, "uts": !cfg.HostNetwork}
		if sb.Namespaces, err = pinNamespaces(filepath.Join(volatile, "ns"), want, cfg.Hostname, cfg.Sysctls); err != nil {
			return sb, err
		}
	}
	if !cfg.HostIPC {
		if sb.Shm, err = mountShm(filepath.Join(volatile, "shm"), m.opts.ShmSize); err != nil {
			return sb, err
		}
	}
	if cfg.PodPID && !cfg.HostPID && sb.InitPid == 0 {
		if err := m.startPodInit(sb, proc.PodInitOptions{}); err != nil {
			return sb, err
		}
	}
	if !cfg.HostNetwork {
		res, err := m.opts.CNI.Setup(context.Background(), m.cniPod(sb))
		if err != nil {
			return sb, err
		}
		sb.Network, sb.IPs = res.Network, res.IPs
	}
	if err := m.writeFiles(sb); err != nil {
		return sb, err
	}
	sb.State, sb.Creating = Ready, false
	if err := m.opts.Hooks.RunPod(ctx, sb.copy()); err != nil {
		return sb, err
	}
	if err := m.save(sb); err != nil {
		return sb, err
	}
	klog.V(2).InfoS("Pod sandbox ready", "id", id, "pod", cfg.Namespace+"/"+cfg.Name, "ips", sb.IPs, "duration", time.Since(start))
	return sb, nil
}

// startPodInit starts the pod's init process and records it.
func (m *Manager) startPodInit(sb *Sandbox, opts proc.PodInitOptions) (err error) {
	if sb.InitPid, err = m.opts.StartPodInit(sb.ID, opts); err != nil {
		return fmt.Errorf("start the pod's init process: %w", err)
	}
	sb.InitStart, sb.InitBoot = proc.StartTime(sb.InitPid), proc.BootID()
	// A pierd killed from here on must find the process to end it.
	return m.save(sb)
}

// InitAlive reports whether the pod's init process (InitPid) still runs:
// the same process, of this boot.
func (sb *Sandbox) InitAlive() bool {
	return sb.InitPid > 0 && proc.IsShimOf(sb.InitPid, sb.InitStart, sb.InitBoot)
}

func (m *Manager) cniPod(sb *Sandbox) cni.Pod {
	return cni.Pod{
		ID: sb.ID, Name: sb.Config.Name, Namespace: sb.Config.Namespace, UID: sb.Config.UID,
		NetNS: sb.Namespaces["net"], PortMappings: sb.Config.PortMappings, Interrupted: sb.Creating,
	}
}

func mountShm(dir string, size int64) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	opts := fmt.Sprintf("mode=1777,size=%d", size)
	if err := unix.Mount("shm", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		return "", fmt.Errorf("mount the pod's /dev/shm: %w", err)
	}
	return dir, nil
}

// teardown releases what a sandbox holds on the node: its network, pinned
// namespaces and /dev/shm. It is safe to call again.
func (m *Manager) teardown(ctx context.Context, sb *Sandbox) error {
	var errs []error
	if !sb.Config.HostNetwork && m.opts.CNI != nil {
		if err := m.opts.CNI.Teardown(ctx, m.cniPod(sb)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unpinNamespaces(sb.Namespaces); err != nil {
		errs = append(errs, err)
	}
	if sb.InitAlive() {
		unix.Kill(sb.InitPid, unix.SIGKILL)
	}
	if sb.Creating {
		// Its init may have started before its pid was recorded.
		for _, pid := range proc.FindPodInits(sb.ID) {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
	if sb.Shm != "" {
		if err := unix.Unmount(sb.Shm, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("unmount %s: %w", sb.Shm, err))
		}
	}
	return errors.Join(errs...)
}

// deleteFiles removes the sandbox's directories.
func (m *Manager) deleteFiles(sb *Sandbox) error {
	os.RemoveAll(filepath.Join(m.opts.State, sb.ID))
	dead := filepath.Join(m.opts.Root, ".del-"+sb.ID)
	if err := os.Rename(filepath.Join(m.opts.Root, sb.ID), dead); err != nil && !os.IsNotExist(err) {
		return err
	}
	return os.RemoveAll(dead)
}

// save records a pod's change of state, not durably: after a crash of
// pierd the page cache holds it, and a reboot ends the pod (it is then not
// ready, whatever the record said).
func (m *Manager) save(sb *Sandbox) error {
	return atomicfile.ReplaceJSON(filepath.Join(sb.Dir, "pod.json"), sb)
}

// saveDurably records a new pod so that even a reboot finds it, and the
// directories it owns are cleaned up.
func (m *Manager) saveDurably(sb *Sandbox) error {
	return atomicfile.WriteJSON(filepath.Join(sb.Dir, "pod.json"), sb)
}

// Stop tears the sandbox's network down and releases its namespaces. It is
// idempotent, and stopping an unknown sandbox is not an error. Calls on
// other pods, List and Get do not wait for it.
func (m *Manager) Stop(ctx context.Context, id string) error {
	p, unlock, err := m.lockPod(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	return m.stop(ctx, p)
}

// stop is Stop of a pod whose op lock the caller holds. The pod is
// recorded not ready before its teardown starts: a pod whose network may be
// half gone (Stop failed, or pierd was killed during it) is never reported
// ready, nor given new containers; a later Stop or Remove finishes it.
func (m *Manager) stop(ctx context.Context, p *pod) error {
	sb := m.current(p)
	if sb.State != NotReady {
		next := sb.copy()
		next.State = NotReady
		if err := m.save(next); err != nil {
			return fmt.Errorf("stop pod sandbox %s: %w", sb.ID, err)
		}
		m.mu.Lock()
		p.sb = next
		m.mu.Unlock()
		sb = next
		m.publishStop(sb)
		m.opts.Hooks.StopPod(ctx, sb.copy())
	}
	if err := m.teardown(ctx, sb); err != nil {
		return fmt.Errorf("stop pod sandbox %s: %w", sb.ID, err)
	}
	klog.V(2).InfoS("Pod sandbox stopped", "id", sb.ID)
	return nil
}

// Remove stops the sandbox if needed and deletes it. Removing an unknown
// sandbox is not an error.
func (m *Manager) Remove(ctx context.Context, id string) error {
	p, unlock, err := m.lockPod(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	if err := m.stop(ctx, p); err != nil {
		return err
	}
	sb := m.current(p)
	m.opts.Hooks.RemovePod(ctx, sb.copy())
	if err := m.deleteFiles(sb); err != nil {
		return fmt.Errorf("remove pod sandbox %s: %w", sb.ID, err)
	}
	m.mu.Lock()
	delete(m.pods, sb.ID)
	if r := m.names[nameOf(sb.Config)]; r != nil && r.id == sb.ID {
		delete(m.names, nameOf(sb.Config))
	}
	m.mu.Unlock()
	m.publishRemove(sb)
	klog.V(2).InfoS("Pod sandbox removed", "id", sb.ID)
	return nil
}

// lockPod finds the pod with this id or unique id prefix and takes its op
// lock; it returns ErrNotFound if the pod was removed while it waited.
func (m *Manager) lockPod(id string) (*pod, func(), error) {
	m.mu.Lock()
	p, err := m.resolve(id)
	m.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	p.op.Lock()
	m.mu.Lock()
	gone := m.pods[p.sb.ID] != p
	m.mu.Unlock()
	if gone {
		p.op.Unlock()
		return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return p, p.op.Unlock, nil
}

// current is the pod's record now.
func (m *Manager) current(p *pod) *Sandbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	return p.sb
}

// Get returns the sandbox with this id or unique id prefix.
func (m *Manager) Get(id string) (*Sandbox, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, err := m.resolve(id)
	if err != nil {
		return nil, err
	}
	return p.sb.copy(), nil
}

func (m *Manager) resolve(id string) (*pod, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: empty pod sandbox id", ErrInvalid)
	}
	v, ok, err := ids.Lookup(m.pods, id)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotFound, id, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return v, nil
}

// Filter selects sandboxes; zero fields select all.
type Filter struct {
	ID     string // id or id prefix
	State  State
	Labels map[string]string // all must match
}

// List returns the sandboxes that match f, oldest first.
func (m *Manager) List(f Filter) []*Sandbox {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Sandbox
	for id, p := range m.pods {
		sb := p.sb
		if f.ID != "" && !strings.HasPrefix(id, f.ID) || f.State != "" && sb.State != f.State {
			continue
		}
		match := true
		for k, v := range f.Labels {
			match = match && sb.Config.Labels[k] == v
		}
		if match {
			out = append(out, sb.copy())
		}
	}
	slices.SortFunc(out, func(a, b *Sandbox) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// copy is a deep copy of the record (Config's maps and slices are shared:
// nothing modifies them after Run).
func (sb *Sandbox) copy() *Sandbox {
	c := *sb
	c.IPs = slices.Clone(sb.IPs)
	c.Namespaces = maps.Clone(sb.Namespaces)
	return &c
}
