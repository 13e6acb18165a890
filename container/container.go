// Package container runs containers inside pod sandboxes: it builds each
// container's OCI spec and bundle, mounts its root file system (overlayfs of
// the image's layers plus an upper directory of its own), starts one
// pier-shim per container to drive the OCI runtime, and keeps the
// container's record and state machine (created → running → exited).
//
// Each container has a persistent directory <root>/<id>/ (container.json,
// upper/, work/) and a volatile one <state>/<id>/ (the bundle: config.json,
// rootfs/; and the shim's files: shim.json, exit.json), both root's alone
// (package privdir): no other user of the node may reach the files a
// container writes, nor its records. The shim outlives
// pierd; after a restart pierd reconnects to it, or reads the exit file it
// left, and never makes up an exit code.
package container

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cdi"
	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/confine"
	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/internal/atomicfile"
	"github.com/pier-runtime/pier/internal/du"
	"github.com/pier-runtime/pier/internal/ids"
	"github.com/pier-runtime/pier/internal/privdir"
	"github.com/pier-runtime/pier/internal/proc"
	"github.com/pier-runtime/pier/oci"
	"github.com/pier-runtime/pier/platform"
	"github.com/pier-runtime/pier/sandbox"
	"github.com/pier-runtime/pier/shim"
	"github.com/pier-runtime/pier/shim/protocol"
)

// Sentinel errors; the CRI layer maps them to gRPC codes.
var (
	ErrNotFound      = errors.New("container not found")
	ErrAlreadyExists = errors.New("container already exists")
	ErrInvalid       = errors.New("invalid container config")
	ErrNotRunning    = errors.New("container is not running")
	ErrPodNotReady   = errors.New("pod sandbox is not ready")
)

// State is a container's state, named as in the CRI.
type State string

const (
	Created State = "CONTAINER_CREATED"
	Running State = "CONTAINER_RUNNING"
	Exited  State = "CONTAINER_EXITED"
	Unknown State = "CONTAINER_UNKNOWN"
)

const recordVersion = 1

// User is the identity the container's processes run as (execs too).
type User struct {
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGids []uint32 `json:"additionalGids,omitempty"`
}

// Container is a container's record.
type Container struct {
	Version    int       `json:"version"`
	ID         string    `json:"id"`
	PodID      string    `json:"podID"`
	Creating   bool      `json:"creating,omitempty"`
	State      State     `json:"state"`
	CreatedAt  time.Time `json:"createdAt"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
	ExitCode   int32     `json:"exitCode"`
	Reason     string    `json:"reason,omitempty"`
	Message    string    `json:"message,omitempty"`
	ImageID    string    `json:"imageID"`  // the image's config digest
	ImageRef   string    `json:"imageRef"` // a repo digest of the image, or its ID
	LogPath    string    `json:"logPath,omitempty"`
	Handler    string    `json:"handler"`
	Socket     string    `json:"socket"`
	ShimPid    int       `json:"shimPid"`
	ShimStart  uint64    `json:"shimStart,omitempty"` // the shim's start time (proc.StartTime), against pid reuse
	ShimBoot   string    `json:"shimBoot,omitempty"`  // the boot it ran in (proc.BootID); "" in an older pier's records
	User       User      `json:"user"`
	ChainIDs   []string  `json:"chainIDs"`
	// ImageVolumes are the images mounted into the container (imagevolume.go).
	ImageVolumes []ImageVolume `json:"imageVolumes,omitempty"`
	Rootfs       string        `json:"rootfs"`
	Cgroup       string        `json:"cgroup"` // the cgroup's directory under each hierarchy
	// Config is the CRI container config, as protobuf JSON.
	Config []byte `json:"config"`
	// Resources are the container's CRI resources as last updated
	// (UpdateResources), as protobuf JSON; nil: its config's.
	Resources json.RawMessage `json:"resources,omitempty"`

	config *runtimeapi.ContainerConfig
	// rt is the runtime the container was created (or, after a restart of
	// pierd, loaded) with: a reload changes it for new containers only.
	rt *oci.Runtime
}

// CRIConfig is the container's CRI config.
func (c *Container) CRIConfig() *runtimeapi.ContainerConfig { return c.config }

// live is what pierd holds for a container whose shim runs or starts.
type live struct {
	starting bool          // a StartContainer runs (under Manager.mu)
	ready    chan struct{} // closed once the shim answered its handshake (or failed)
	err      error         // why the shim could not create the container
	client   *shim.Client
	exited   chan struct{} // closed once the exit is recorded, or the shim is lost (Unknown)
	execs    chan struct{} // ExecSync slots: one sent for each that runs
	resize   chan struct{} // UpdateResources' slot: one sent while one runs
}

func newLive() *live {
	return &live{ready: make(chan struct{}), exited: make(chan struct{}), execs: make(chan struct{}, MaxExecsPerContainer), resize: make(chan struct{}, 1)}
}

// Options configure a Manager.
type Options struct {
	Root       string // persistent container directories, e.g. /var/lib/pier/containers
	State      string // volatile ones, e.g. /run/pier/containers
	SocketDir  string // shim control sockets, e.g. /run/pier/s
	ShimBinary string // path of pier-shim
	Images     *image.Store
	// Platforms says which platforms a pod's runtime handler runs; nil:
	// an image's platform is not checked (the store refused foreign ones
	// at pull time).
	Platforms *platform.Policy
	Pods      *sandbox.Manager
	Runtimes  map[string]*oci.Runtime // by handler name; SetRuntimes replaces them
	Cgroups   *cgroup.Node            // the node's cgroups and driver
	// OOMScoreAdj is pierd's own oom_score_adj: containers may not go lower.
	OOMScoreAdj int
	// Confine is the confinement (seccomp, AppArmor) the node can apply.
	Confine *confine.Node
	// Hooks, if set, are told of each container's life (NRI plugins).
	Hooks Hooks
	// Devices is the node's CDI devices; nil knows none, and a container
	// that asks for one is refused.
	Devices *cdi.Registry
	// OnExit, if set, is told the reason ("OOMKilled", "Completed",
	// "Error", ...) of each exit recorded from a container's shim (package
	// metrics counts OOM kills). It runs under the manager's lock: it must
	// be quick and must not call the manager.
	OnExit func(reason string)
	// OnEvent, if set, is told of each container created, started,
	// stopped (its exit recorded, or its shim lost) and deleted, once the
	// change is recorded (package events). It runs under the manager's
	// lock, in the order of the changes: it must be quick and must not
	// call the manager.
	OnEvent EventFunc
}

// Manager runs the node's containers.
type Manager struct {
	opts Options

	// cgroupMu orders the runtime's creates (read), which make cgroups
	// under the default cgroup parent, and the removal of that parent once
	// empty (write): a create must not find the parent gone between its
	// mkdir of the parent and of its own cgroup.
	cgroupMu sync.RWMutex

	rtMu sync.RWMutex // guards opts.Runtimes (SetRuntimes)

	mu         sync.Mutex
	containers map[string]*Container
	live       map[string]*live
	names      map[string]string      // reserved name -> id
	cpu        map[string]cpuSample   // the last CPU usage Stats read, by container
	layers     map[string]*layerUsage // the last writable layer usage Stats measured

	execs chan struct{} // ExecSync slots of all containers: one sent for each that runs

	checkpoints sync.Map // ids of the containers a Checkpoint dumps (checkpoint.go)

	// For tests: the clock (nil: time.Now) and the measure of a
	// writable layer (nil: du.Walk).
	clock func() time.Time
	walk  func(dir string) (du.Usage, error)
}

// New loads the containers recorded under opts.Root and reconnects to
// their shims.
func New(opts Options) (*Manager, error) {
	// Each container's own directories are Private (see create); the roots
	// above them Passable, so that one of them can be opened to one group.
	for d, mode := range map[string]os.FileMode{opts.Root: privdir.Passable, opts.State: privdir.Passable, opts.SocketDir: privdir.Private} {
		if err := privdir.Make(d, mode); err != nil {
			return nil, err
		}
	}
	m := &Manager{opts: opts, containers: map[string]*Container{}, live: map[string]*live{}, names: map[string]string{}, cpu: map[string]cpuSample{}, layers: map[string]*layerUsage{}, execs: make(chan struct{}, MaxExecs)}
	if err := m.load(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) dir(id string) string      { return filepath.Join(m.opts.Root, id) }
func (m *Manager) stateDir(id string) string { return filepath.Join(m.opts.State, id) }
func (m *Manager) bundle(id string) string   { return filepath.Join(m.stateDir(id), "bundle") }
func (m *Manager) shimDir(id string) string  { return filepath.Join(m.stateDir(id), "shim") }

// socket is a short control socket path, under the 108-byte limit.
func (m *Manager) socket(id string) string {
	sum := sha256.Sum256([]byte(id))
	return filepath.Join(m.opts.SocketDir, hex.EncodeToString(sum[:6])+".sock")
}

// save records a container, not durably: after a crash of pierd the page
// cache holds it, and a reboot ends the container (its exit is then
// recorded as lost). A new container's record lost with the node is no
// leak either: load removes a container directory without a readable
// record. It runs under m.mu, so it must not wait for the disk.
func (m *Manager) save(c *Container) error {
	return atomicfile.ReplaceJSON(filepath.Join(m.dir(c.ID), "container.json"), c)
}

// nameOf is the name kubelet reserves a container under.
func nameOf(cfg *runtimeapi.ContainerConfig, pod *sandbox.Sandbox) string {
	md := cfg.GetMetadata()
	p := pod.Config
	return fmt.Sprintf("%s_%s_%s_%s_%d", md.GetName(), p.Name, p.Namespace, p.UID, md.GetAttempt())
}

func (m *Manager) load() error {
	var shims []*Container
	m.mu.Lock()
	entries, err := os.ReadDir(m.opts.Root)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	for _, e := range entries {
		dir := filepath.Join(m.opts.Root, e.Name())
		if strings.HasPrefix(e.Name(), ".") {
			os.RemoveAll(dir)
			continue
		}
		c, err := readRecord(dir)
		if err != nil {
			klog.ErrorS(err, "Dropping unreadable container record", "dir", dir)
			os.RemoveAll(dir)
			continue
		}
		if c.Creating {
			klog.InfoS("Undoing a container whose creation was interrupted", "id", c.ID)
			m.destroy(context.Background(), c)
			continue
		}
		// An older pier made them passable by all (the volatile one is
		// gone after a reboot: it is not made again here). Those of a
		// user-namespaced container are passable by its pod's group only.
		for _, d := range []string{dir, m.stateDir(c.ID)} {
			if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 != 0 {
				if err := privdir.Make(d, privdir.Private); err != nil {
					klog.ErrorS(err, "Making a container's directory private", "dir", d)
				}
			}
		}
		c.rt = m.offered(c.Handler)
		m.containers[c.ID] = c
		if m.opts.Pods != nil { // nil in tests
			if pod, err := m.opts.Pods.Get(c.PodID); err == nil {
				m.names[nameOf(c.config, pod)] = c.ID
			}
		}
		m.opts.Images.HoldLayers(c.ID, c.allChainIDs())
		if c.State == Running || c.State == Created {
			if _, err := os.Stat(m.stateDir(c.ID)); errors.Is(err, os.ErrNotExist) {
				m.lostWithNode(c)
				continue
			}
		}
		if c.State == Running || c.State == Created || c.State == Unknown && c.ShimPid > 0 {
			shims = append(shims, c)
		}
	}
	m.mu.Unlock()
	m.reconnectAll(shims)
	m.mu.Lock()
	defer m.mu.Unlock()
	klog.InfoS("Containers loaded", "containers", len(m.containers), "live", len(m.live), "reconnected", len(shims))
	return nil
}

func readRecord(dir string) (*Container, error) {
	b, err := os.ReadFile(filepath.Join(dir, "container.json"))
	if err != nil {
		return nil, err
	}
	var c Container
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, err
	}
	if c.Version != recordVersion {
		return nil, fmt.Errorf("unknown record version %d", c.Version)
	}
	c.config = &runtimeapi.ContainerConfig{}
	if err := protojson.Unmarshal(c.Config, c.config); err != nil {
		return nil, err
	}
	return &c, nil
}

// loadConnectTimeout bounds each connection to a shim at start-up (and
// the state it asks for), before pierd serves; one that does not answer
// in time is tried again in the background (retry).
const loadConnectTimeout = 2 * time.Second

// reconnectParallel is how many shims pierd reconnects to at once at
// start-up: with monitors that hang, N containers take about
// N/reconnectParallel x loadConnectTimeout (2 x that with a runtime's
// state to settle), not N x.
const reconnectParallel = 16

// connect connects to a shim and asks for its state.
func connect(socket string, timeout time.Duration) (*shim.Client, *protocol.State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client, err := shim.Connect(ctx, socket)
	if err != nil {
		return nil, nil, err
	}
	st, err := client.State(ctx)
	if err != nil {
		return nil, nil, err
	}
	return client, st, nil
}

// reconnectAll reconnects to the shims of containers loaded at start-up,
// reconnectParallel at a time, and returns when all have answered or
// timed out. It holds no lock across the connections: each container's
// record is brought in line under mu once its shim has answered.
func (m *Manager) reconnectAll(cs []*Container) {
	sem := make(chan struct{}, reconnectParallel)
	var wg sync.WaitGroup
	for _, c := range cs {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			m.reconnect(c)
		}()
	}
	wg.Wait()
}

// reconnect finds a container's shim after a pierd restart, or learns how
// the container ended. The caller does not hold mu; nothing else touches
// c until this returns (pierd is not serving yet).
func (m *Manager) reconnect(c *Container) {
	client, st, err := connect(c.Socket, loadConnectTimeout)
	if err == nil {
		st = m.settle(c.ID, m.runtimeOf(c), c.State, client, st)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		m.unreachable(c, err)
		return
	}
	m.adopt(c, client, st)
}

// settle returns the shim's state, after telling a shim that knows its
// container as created but whose runtime has started it: pierd ran the
// runtime's start and stopped before it told the shim (or the shim is of
// an older pier, which never hears of starts it did not run). It runs
// commands: the caller does not hold mu.
func (m *Manager) settle(id string, rt *oci.Runtime, state State, client *shim.Client, st *protocol.State) *protocol.State {
	if st.Status != protocol.StatusCreated || state == Running || rt == nil {
		return st
	}
	ctx, cancel := context.WithTimeout(context.Background(), loadConnectTimeout)
	defer cancel()
	if s, err := rt.State(ctx, id); err != nil || s.Status != "running" {
		return st
	}
	client.Started(ctx)
	settled := *st
	settled.Status, settled.StartedAt = protocol.StatusRunning, time.Now()
	return &settled
}

// adopt brings a container's record in line with what its shim reports
// and follows it. The caller holds mu.
func (m *Manager) adopt(c *Container, client *shim.Client, st *protocol.State) {
	if c.ShimPid == 0 && st.ShimPid > 0 {
		// pierd stopped between the shim's handshake and its record.
		c.ShimPid, c.ShimStart, c.ShimBoot = st.ShimPid, proc.StartTime(st.ShimPid), proc.BootID()
	}
	if c.State == Unknown {
		klog.InfoS("Container's shim answers again", "id", c.ID, "status", st.Status)
		c.State, c.Reason, c.Message = Created, "", ""
		if !c.StartedAt.IsZero() {
			c.State = Running
		}
	}
	if c.State == Created && !st.StartedAt.IsZero() {
		c.State = Running
		if c.StartedAt.IsZero() {
			c.StartedAt = st.StartedAt
		}
	}
	m.save(c)
	m.watch(c, client)
}

// shimAlive reports whether the container's shim process still runs.
func shimAlive(c *Container) bool {
	return c.ShimPid > 0 && proc.IsShimOf(c.ShimPid, c.ShimStart, c.ShimBoot)
}

// unreachable records a container whose shim does not answer (err). A
// shim that still runs (stopped, or too busy) is tried again in the
// background until it answers or ends; the container is Unknown meanwhile,
// and StopContainer stops it through the runtime. The caller holds mu.
func (m *Manager) unreachable(c *Container, err error) {
	if !shimAlive(c) {
		m.shimGone(c, err)
		return
	}
	if c.State != Unknown {
		klog.InfoS("Container's shim does not answer; trying again in the background", "id", c.ID, "pid", c.ShimPid, "err", err)
		c.State, c.Reason = Unknown, "ShimUnresponsive"
		c.Message = fmt.Sprintf("pier-shim of this container (pid %d) does not answer: %v", c.ShimPid, err)
		m.save(c)
	}
	delete(m.live, c.ID)
	go m.retry(c)
}

// retryMax is the longest pause between two attempts to reach a shim.
const retryMax = 10 * time.Second

// retry tries to reach an unresponsive shim until it answers, ends, or
// its container is removed.
func (m *Manager) retry(c *Container) {
	for delay := time.Second; ; delay = min(2*delay, retryMax) {
		time.Sleep(delay)
		m.mu.Lock()
		current := m.containers[c.ID] == c && m.live[c.ID] == nil && c.State == Unknown
		m.mu.Unlock()
		if !current {
			return
		}
		client, st, err := connect(c.Socket, 10*time.Second)
		if err == nil {
			st = m.settle(c.ID, m.runtimeOf(c), Unknown, client, st)
		}
		m.mu.Lock()
		if m.containers[c.ID] != c || m.live[c.ID] != nil || c.State != Unknown {
			m.mu.Unlock()
			return
		}
		done := true
		switch {
		case err == nil:
			m.adopt(c, client, st)
		case !shimAlive(c):
			m.shimGone(c, err)
		default:
			done = false
		}
		m.mu.Unlock()
		if done {
			return
		}
	}
}

// shimGone records how a container whose shim has ended (err) ended: with
// the exit file the shim left, or, without one, as unknown. The caller
// holds mu, or has the container to itself.
func (m *Manager) shimGone(c *Container, err error) {
	delete(m.live, c.ID)
	if exit, rerr := protocol.ReadExit(m.shimDir(c.ID)); rerr == nil {
		m.recordExit(c, exit)
		return
	}
	klog.InfoS("Container's shim is gone and left no exit status", "id", c.ID, "err", err, "shimLog", shimLogTail(m.shimDir(c.ID)))
	c.State, c.Reason = Unknown, "ShimDied"
	c.Message = "pier-shim of this container died; its exit status is unknown"
	m.save(c)
	m.publishExit(c)
}

// shimLogTail is the end of a shim's own log (protocol.LogFile), which
// says why a shim ended unexpectedly.
func shimLogTail(dir string) string {
	f, err := os.Open(filepath.Join(dir, protocol.LogFile))
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 2 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > tail {
		f.Seek(fi.Size()-tail, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, tail))
	return strings.TrimSpace(string(b))
}

// unknownExitCode is the exit code of a container whose exit was lost, as
// containerd reports it; its reason says so.
const unknownExitCode = 255

// lostWithNode records a container whose volatile state is gone: the node
// rebooted (or /run was emptied) while it was created or running, so its
// processes are gone and so is any exit file. It is reported exited, with
// an exit code and reason that say the status is unknown, as containerd
// does, so that kubelet restarts it by its pod's policy.
func (m *Manager) lostWithNode(c *Container) {
	klog.InfoS("Container's volatile state is gone (the node rebooted): recording it exited, status unknown", "id", c.ID, "state", c.State)
	was := "created"
	if !c.StartedAt.IsZero() {
		was = "running"
	}
	m.recordLostExit(c, "the node restarted while the container was "+was+"; its exit status is unknown")
}

// recordLostExit records a container exited whose exit status is lost,
// with containerd's exit code and reason for it, and msg saying why.
func (m *Manager) recordLostExit(c *Container, msg string) {
	c.State, c.ExitCode, c.FinishedAt = Exited, unknownExitCode, time.Now()
	c.Reason, c.Message = "Unknown", msg
	if err := m.save(c); err != nil {
		klog.ErrorS(err, "Recording a container whose exit status is lost", "id", c.ID)
	}
	m.publishExit(c)
}

// watch waits, in the background, for the container to exit.
func (m *Manager) watch(c *Container, client *shim.Client) {
	l := newLive()
	l.client = client
	close(l.ready)
	m.live[c.ID] = l
	m.follow(c, l)
}

// follow waits, in the background, for the container of a live shim to
// exit, and records the exit.
func (m *Manager) follow(c *Container, l *live) {
	client := l.client
	go func() {
		defer close(l.exited)
		exit, err := client.Wait(context.Background())
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.containers[c.ID] != c || m.live[c.ID] != l {
			return // removed, or followed anew, meanwhile
		}
		if err != nil {
			m.unreachable(c, err)
			return
		}
		m.recordExit(c, exit)
	}()
}

// recordExit marks a container exited with what its shim reported.
func (m *Manager) recordExit(c *Container, e *protocol.Exit) {
	c.State, c.ExitCode, c.FinishedAt = Exited, int32(e.Code), e.FinishedAt
	switch {
	case e.OOMKilled:
		c.Reason = "OOMKilled"
	case e.Code == 0:
		c.Reason = "Completed"
	case c.Reason == "":
		c.Reason = "Error"
	}
	if err := m.save(c); err != nil {
		klog.ErrorS(err, "Recording a container's exit", "id", c.ID)
	}
	klog.V(2).InfoS("Container exited", "id", c.ID, "exitCode", e.Code, "reason", c.Reason)
	if m.opts.OnExit != nil {
		m.opts.OnExit(c.Reason)
	}
	m.publishExit(c)
}

// Get returns a container by id or unique id prefix.
func (m *Manager) Get(id string) (*Container, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.resolve(id)
	if err != nil {
		return nil, err
	}
	return c.copy(), nil
}

func (m *Manager) resolve(id string) (*Container, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: empty container id", ErrInvalid)
	}
	v, ok, err := ids.Lookup(m.containers, id)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotFound, id, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return v, nil
}

func (c *Container) copy() *Container {
	d := *c
	d.ChainIDs = slices.Clone(c.ChainIDs)
	d.ImageVolumes = slices.Clone(c.ImageVolumes)
	return &d
}

// Filter selects containers; zero fields select all.
type Filter struct {
	ID     string // id or prefix
	PodID  string // id or prefix
	State  State
	Labels map[string]string
}

// List returns the containers that match f, oldest first.
func (m *Manager) List(f Filter) []*Container {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Container
	for id, c := range m.containers {
		if f.ID != "" && !strings.HasPrefix(id, f.ID) || f.PodID != "" && !strings.HasPrefix(c.PodID, f.PodID) || f.State != "" && c.State != f.State {
			continue
		}
		match := true
		for k, v := range f.Labels {
			match = match && c.config.GetLabels()[k] == v
		}
		if match {
			out = append(out, c.copy())
		}
	}
	slices.SortFunc(out, func(a, b *Container) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// InPod lists the ids of a pod's containers.
func (m *Manager) InPod(podID string) []string {
	var ids []string
	for _, c := range m.List(Filter{PodID: podID}) {
		if c.PodID == podID {
			ids = append(ids, c.ID)
		}
	}
	return ids
}

// SetRuntimes replaces the runtime handlers offered to new containers.
// The containers that exist keep the runtime they were created with, also
// when their handler is removed or changed.
func (m *Manager) SetRuntimes(runtimes map[string]*oci.Runtime) {
	m.rtMu.Lock()
	defer m.rtMu.Unlock()
	m.opts.Runtimes = runtimes
}

// offered is the runtime of a handler new containers may use, or nil.
func (m *Manager) offered(handler string) *oci.Runtime {
	m.rtMu.RLock()
	defer m.rtMu.RUnlock()
	return m.opts.Runtimes[handler]
}

// runtimeOf is the runtime of an existing container, or nil: the one it
// was created with, else (its handler could not run when pierd started)
// its handler's now.
func (m *Manager) runtimeOf(c *Container) *oci.Runtime {
	if c.rt != nil {
		return c.rt
	}
	return m.offered(c.Handler)
}

// Census counts the containers by state, and the shims pierd follows: the
// containers whose pier-shim it started or reconnected to and has not yet
// deleted or lost. It copies nothing (package metrics calls it at each
// scrape).
func (m *Manager) Census() (states map[State]int, shims int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	states = make(map[State]int, 4)
	for _, c := range m.containers {
		states[c.State]++
	}
	return states, len(m.live)
}
