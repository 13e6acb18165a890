package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cdi"
	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/confine"
	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/internal/atomicfile"
	"github.com/pier-runtime/pier/internal/beneath"
	"github.com/pier-runtime/pier/internal/ids"
	"github.com/pier-runtime/pier/internal/mountinfo"
	"github.com/pier-runtime/pier/internal/privdir"
	"github.com/pier-runtime/pier/internal/proc"
	"github.com/pier-runtime/pier/oci"
	"github.com/pier-runtime/pier/sandbox"
	"github.com/pier-runtime/pier/shim"
	"github.com/pier-runtime/pier/shim/protocol"
)

// Create makes a container in a pod: its root file system, OCI bundle and
// shim, which runs the runtime's create. The container is then Created.
func (m *Manager) Create(ctx context.Context, podID string, cfg *runtimeapi.ContainerConfig) (*Container, error) {
	if cfg.GetMetadata().GetName() == "" {
		return nil, fmt.Errorf("%w: metadata needs a name", ErrInvalid)
	}
	if cfg.GetImage().GetImage() == "" {
		return nil, fmt.Errorf("%w: no image", ErrInvalid)
	}
	if sc := cfg.GetLinux().GetSecurityContext(); sc.GetRunAsGroup() != nil && sc.GetRunAsUser() == nil && sc.GetRunAsUsername() == "" {
		return nil, fmt.Errorf("%w: run_as_group needs run_as_user or run_as_username", ErrInvalid)
	}
	pod, err := m.opts.Pods.Get(podID)
	if err != nil {
		return nil, err
	}
	if err := checkLogPath(pod.Config.LogDirectory, cfg.GetLogPath()); err != nil {
		return nil, err
	}
	if pod.State != sandbox.Ready {
		return nil, fmt.Errorf("%w: pod sandbox %s is stopped: containers cannot be created in it", ErrPodNotReady, pod.ID)
	}
	if pod.InitPid > 0 && !pod.InitAlive() {
		// Its PID namespace is gone, and the pid may be another process's.
		return nil, fmt.Errorf("%w: the init process of pod sandbox %s (pid %d) has exited: remove the pod and run it again", ErrPodNotReady, pod.ID, pod.InitPid)
	}
	rt := m.offered(pod.Config.RuntimeHandler)
	if rt == nil {
		return nil, fmt.Errorf("%w: pod sandbox %s has runtime handler %q, which pier does not offer", ErrPodNotReady, pod.ID, pod.Config.RuntimeHandler)
	}
	img, err := m.image(cfg.GetImage().GetImage(), pod.Config.RuntimeHandler)
	if err != nil {
		return nil, err
	}
	volumes, err := imageVolumeRefs(cfg)
	if err != nil {
		return nil, err
	}
	for i, ref := range volumes {
		vimg, err := m.opts.Images.Get(ref)
		if err != nil {
			return nil, fmt.Errorf("image volume: %w: pull it first", err)
		}
		volumes[i] = vimg.ID
	}
	name := nameOf(cfg, pod)
	id := ids.New()
	m.mu.Lock()
	if other, ok := m.names[name]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: the name %s is taken by container %s: remove it first", ErrAlreadyExists, name, other)
	}
	m.names[name] = id
	m.mu.Unlock()

	unblock := m.hooks().Block()
	defer unblock()
	c, err := m.create(ctx, id, pod, rt, img, volumes, cfg)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		delete(m.names, name)
		return nil, err
	}
	m.containers[id] = c
	m.publish(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, c)
	// The shim runs the runtime's create now, while the client gets its
	// answer and sends StartContainer; Start waits for it.
	l := newLive()
	m.live[id] = l
	go m.startShim(c, rt, pod.Config.LogDirectory, l)
	return c.copy(), nil
}

func imageRef(digests []string, id string) string {
	if len(digests) > 0 {
		return digests[0]
	}
	return id
}

// create makes the container from img, with the images of volumeIDs as
// its image volumes, as resolved once by Create: the images may be
// removed meanwhile, but their layers are held from here on.
func (m *Manager) create(ctx context.Context, id string, pod *sandbox.Sandbox, rt *oci.Runtime, img *image.Image, volumeIDs []string, cfg *runtimeapi.ContainerConfig) (c *Container, err error) {
	start := time.Now()
	raw, err := protojson.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	c = &Container{
		Version: recordVersion, ID: id, PodID: pod.ID, Creating: true, State: Created, CreatedAt: time.Now(),
		ImageID: img.ID, ImageRef: imageRef(img.RepoDigests, img.ID), Handler: pod.Config.RuntimeHandler, Socket: m.socket(id),
		Rootfs: filepath.Join(m.bundle(id), "rootfs"), Config: raw, config: cfg, rt: rt,
	}
	cg := m.opts.Cgroups.Container(pod.Config.CgroupParent, id)
	c.Cgroup = cg.Dir
	if pod.Config.LogDirectory != "" && cfg.GetLogPath() != "" {
		c.LogPath = filepath.Join(pod.Config.LogDirectory, cfg.GetLogPath())
	}
	// Root's alone: the container's files (its writable layer, its root
	// file system) may hold setuid-root files and device nodes it made.
	for _, d := range []string{filepath.Join(m.dir(id), "work"), c.Rootfs, m.shimDir(id)} {
		if err := privdir.Make(d, privdir.Private); err != nil {
			os.RemoveAll(m.dir(id))
			os.RemoveAll(m.stateDir(id))
			return nil, err
		}
	}
	chains, err := m.opts.Images.Hold(id, append([]string{img.ID}, volumeIDs...)...)
	if err != nil {
		os.RemoveAll(m.dir(id))
		os.RemoveAll(m.stateDir(id))
		return nil, err
	}
	c.ChainIDs = chains[0]
	c.ImageVolumes = m.newImageVolumes(id, cfg, volumeIDs, chains[1:])
	if err := m.save(c); err != nil {
		m.destroy(ctx, c)
		return nil, err
	}
	defer func() {
		if err != nil {
			m.destroy(context.Background(), c)
		}
	}()
	if err := m.makeUpper(c); err != nil {
		return c, err
	}
	if err := m.mountRootfs(c, pod); err != nil {
		return c, err
	}
	if err := m.mountImageVolumes(c, pod); err != nil {
		return c, err
	}
	if err := PrepareMounts(cfg); err != nil {
		return c, err
	}
	spec, notes, err := Spec(SpecInput{
		ID: id, Config: cfg, Pod: pod, PodInitPid: pod.InitPid, Image: img.Config, Rootfs: c.Rootfs,
		CgroupsPath: cg.Runtime, Cgroups: m.opts.Cgroups, OOMScoreAdjFloor: m.opts.OOMScoreAdj,
		Confine: m.opts.Confine, Runtime: rt, ImageVolumes: c.imageVolumeSources(),
	})
	if err != nil && !errors.Is(err, confine.ErrUnsupported) {
		err = fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err != nil {
		return c, err
	}
	usernsNotes, err := m.prepareUserNamespace(c, pod, spec)
	if err != nil {
		return c, err
	}
	for _, n := range append(notes, usernsNotes...) {
		klog.InfoS("Container spec adjusted", "id", id, "note", n)
	}
	if err := m.injectDevices(spec, cfg); err != nil {
		return c, err
	}
	if err := m.adjust(ctx, pod, c, spec); err != nil {
		return c, err
	}
	defer func() {
		if err != nil {
			m.undoHooks(pod, c)
		}
	}()
	c.User = User{UID: spec.Process.User.UID, GID: spec.Process.User.GID, AdditionalGids: spec.Process.User.AdditionalGids}
	b, err := json.Marshal(spec)
	if err != nil {
		return c, err
	}
	// The bundle is in the volatile state directory.
	if err := atomicfile.Replace(filepath.Join(m.bundle(id), "config.json"), b, 0o600); err != nil {
		return c, err
	}
	if c.LogPath != "" {
		if err := makeLogDir(pod.Config.LogDirectory, cfg.GetLogPath()); err != nil {
			return c, err
		}
	}
	c.Creating = false
	if err := m.save(c); err != nil {
		return c, err
	}
	klog.V(2).InfoS("Container created", "id", id, "pod", pod.ID, "name", cfg.GetMetadata().GetName(), "duration", time.Since(start))
	return c, nil
}

// adjust lets the hooks (NRI plugins) adjust a new container's spec; once
// they were asked, a create that fails later tells them the container
// stopped and was removed. An adjustment of the cgroup path is refused:
// pier keeps its containers where cgroup.Node puts them.
func (m *Manager) adjust(ctx context.Context, pod *sandbox.Sandbox, c *Container, spec *specs.Spec) (err error) {
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	cgroupsPath, before := spec.Linux.CgroupsPath, criResources(spec)
	err = m.hooks().CreateContainer(ctx, pod, c.copy(), spec)
	if err == nil && (spec.Linux == nil || spec.Linux.CgroupsPath != cgroupsPath) {
		err = fmt.Errorf("%w: an NRI plugin moved the container's cgroup away from %q: pier does not support that", ErrInvalid, cgroupsPath)
	}
	if err == nil {
		// The limits the node cannot apply are dropped, as of a CRI config.
		if ferr := WithResourcesFit(m.opts.Cgroups)(spec); ferr != nil {
			err = fmt.Errorf("%w: resources after the NRI plugins' adjustment: %v", ErrInvalid, ferr)
		}
	}
	if err == nil {
		// Adjusted resources are the container's: its status reports them,
		// and an update starts from them.
		if after := criResources(spec); !proto.Equal(before, after) {
			c.Resources, err = protojson.Marshal(mergeResources(c.CurrentResources(), after))
		}
	}
	if err != nil {
		m.undoHooks(pod, c)
		return err
	}
	return nil
}

// criResources is the CRI form of a spec's cgroup limits.
func criResources(spec *specs.Spec) *runtimeapi.LinuxContainerResources {
	out := &runtimeapi.LinuxContainerResources{}
	if spec.Linux == nil || spec.Linux.Resources == nil {
		return out
	}
	r := spec.Linux.Resources
	if cpu := r.CPU; cpu != nil {
		if cpu.Shares != nil {
			out.CpuShares = int64(*cpu.Shares)
		}
		if cpu.Quota != nil {
			out.CpuQuota = *cpu.Quota
		}
		if cpu.Period != nil {
			out.CpuPeriod = int64(*cpu.Period)
		}
		out.CpusetCpus, out.CpusetMems = cpu.Cpus, cpu.Mems
	}
	if mem := r.Memory; mem != nil {
		if mem.Limit != nil {
			out.MemoryLimitInBytes = *mem.Limit
		}
		if mem.Swap != nil {
			out.MemorySwapLimitInBytes = *mem.Swap
		}
	}
	for _, h := range r.HugepageLimits {
		out.HugepageLimits = append(out.HugepageLimits, &runtimeapi.HugepageLimit{PageSize: h.Pagesize, Limit: h.Limit})
	}
	out.Unified = maps.Clone(r.Unified)
	return out
}

// undoHooks tells the hooks that a container they were told of will not
// be: it stopped and was removed.
func (m *Manager) undoHooks(pod *sandbox.Sandbox, c *Container) {
	ctx := context.Background()
	m.hooks().StopContainer(ctx, pod, c.copy())
	m.hooks().RemoveContainer(ctx, pod, c.copy())
}

// injectDevices adds the CDI devices the container asks for (CDIDevices,
// cdi.k8s.io/* annotations) to its spec: an unknown one is ErrInvalid.
func (m *Manager) injectDevices(spec *specs.Spec, cfg *runtimeapi.ContainerConfig) error {
	var names []string
	for _, d := range cfg.GetCDIDevices() {
		names = append(names, d.GetName())
	}
	devices, err := cdi.Requested(names, cfg.GetAnnotations())
	if err == nil {
		err = m.opts.Devices.Inject(spec, devices)
	}
	if errors.Is(err, cdi.ErrUnknownDevice) {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return err
}

// checkLogPath refuses a container log path (the CRI's log_path, relative
// to the pod's log_directory) that would lead out of the pod's log
// directory: an absolute one, or one with a ".." component.
func checkLogPath(dir, name string) error {
	if dir == "" || name == "" {
		return nil // no log: the output is discarded
	}
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("%w: the pod's log directory %q is not an absolute path", ErrInvalid, dir)
	}
	if err := beneath.Check(name); err != nil {
		return fmt.Errorf("%w: log path: %v: it must be a path inside the pod's log directory", ErrInvalid, err)
	}
	return nil
}

// makeLogDir makes the pod's log directory dir (kubelet's, as it names it)
// and the directories of the container's log, name, beneath it without
// following a symbolic link: whoever can write there (a container that
// mounts it) must not make pier create directories elsewhere. The shim
// opens the log itself beneath dir too (package beneath).
func makeLogDir(dir, name string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if d := filepath.Dir(name); d != "." {
		return beneath.MkdirAll(dir, d, 0o755)
	}
	return nil
}

// removeDefaultCgroupParent removes pier's own cgroup parent from every
// hierarchy once it is empty; parents kubelet made are kubelet's to remove,
// and systemd's slices systemd's.
func (m *Manager) removeDefaultCgroupParent() {
	if m.opts.Cgroups.Driver != cgroup.Cgroupfs {
		return
	}
	parent := m.opts.Cgroups.DefaultParent()
	dirs, _ := filepath.Glob(filepath.Join(cgroup.Root, "*", parent))
	dirs = append(dirs, filepath.Join(cgroup.Root, parent))
	for _, d := range dirs {
		unix.Rmdir(d) // fails, as it should, while other containers use it
	}
}

// makeUpper makes the container's upper directory with the mode and owner
// of the image's root directory (its top layer's): overlayfs shows the
// upper directory's as the container's "/".
func (m *Manager) makeUpper(c *Container) error {
	upper := filepath.Join(m.dir(c.ID), "upper")
	mode, uid, gid := os.FileMode(0o755), 0, 0
	if len(c.ChainIDs) > 0 {
		fi, err := os.Stat(m.opts.Images.LayerDir(c.ChainIDs[len(c.ChainIDs)-1]))
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		mode, uid, gid = fi.Mode().Perm(), int(st.Uid), int(st.Gid)
	}
	if err := os.Mkdir(upper, mode); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := os.Chown(upper, uid, gid); err != nil {
		return err
	}
	return os.Chmod(upper, mode) // past the umask
}

// mountRootfs mounts the image's layers and the container's upper directory.
//
// Without nosuid or nodev: the runtime bind-mounts this mount as the
// container's "/", and the bind keeps its flags, so setuid binaries and
// device nodes in the image would stop working inside (runc 1.1 even drops
// the flags again when it remounts a read-only root). What keeps a local
// user from running such a file from the host is the Private directory
// above the mount and the upper directory (which no mount flag here would
// cover: overlayfs writes it directly).
func (m *Manager) mountRootfs(c *Container, pod *sandbox.Sandbox) error {
	lower := make([]string, 0, len(c.ChainIDs))
	for i := len(c.ChainIDs) - 1; i >= 0; i-- {
		lower = append(lower, m.opts.Images.LayerDir(c.ChainIDs[i]))
	}
	// Idmapped, for a container in a user namespace (userns.go).
	lower, release, err := m.idmapLayers(c, pod, lower)
	if err != nil {
		return err
	}
	defer release()
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lower, ":"),
		filepath.Join(m.dir(c.ID), "upper"), filepath.Join(m.dir(c.ID), "work"))
	if len(opts) >= os.Getpagesize() {
		return fmt.Errorf("%w: the image has too many layers (%d) for one overlay mount", ErrInvalid, len(lower))
	}
	if err := unix.Mount("overlay", c.Rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount the container's root file system: %w", err)
	}
	return nil
}

// destroy removes everything of a container: its shim and runtime state,
// root file system, directories and image hold. It is safe to call again.
func (m *Manager) destroy(ctx context.Context, c *Container) {
	rt := m.runtimeOf(c)
	runtimeDir := ""
	if rt != nil && rt.Root != "" {
		runtimeDir = filepath.Join(rt.Root, c.ID)
		// runc 1.1 bind-mounts its own binary into the container's state
		// directory for the moment it starts a process there (runc.XXXXXX,
		// against CVE-2019-5736); a runc killed in that moment (an exec
		// probe past its timeout) leaves the mount, and with it a state
		// directory that the runtime's delete cannot remove.
		if left, _ := mountinfo.Under(runtimeDir); len(left) > 0 {
			klog.V(2).InfoS("Unmounting what the runtime left in its state directory", "id", c.ID, "mounts", left)
			if err := mountinfo.UnmountUnder(runtimeDir); err != nil {
				klog.ErrorS(err, "Unmounting what the runtime left in its state directory", "id", c.ID)
				runtimeDir = ""
			}
		}
	}
	// Every process of the container first; then the shim, which records
	// the init's exit and ends; then the runtime's state and cgroup.
	if rt != nil {
		rt.Kill(ctx, c.ID, syscall.SIGKILL, true)
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	if client, err := shim.Connect(cctx, c.Socket); err == nil {
		if err := client.Delete(cctx); err != nil {
			klog.ErrorS(err, "Ending the container's shim", "id", c.ID)
		}
	}
	cancel()
	if rt != nil {
		err := rt.Delete(ctx, c.ID, true)
		if err != nil && !errors.Is(err, oci.ErrNotFound) {
			klog.ErrorS(err, "Deleting the container's runtime state", "id", c.ID)
		} else if runtimeDir != "" {
			os.RemoveAll(runtimeDir) // what a delete that failed half-way left
		}
	}
	if shimAlive(c) {
		syscall.Kill(c.ShimPid, syscall.SIGKILL)
	}
	if c.Rootfs != "" {
		if err := unix.Unmount(c.Rootfs, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			klog.ErrorS(err, "Unmounting the container's root file system", "id", c.ID)
		}
	}
	os.Remove(c.Socket)
	if err := mountinfo.UnmountUnder(m.stateDir(c.ID)); err != nil {
		// Never remove files through a mount (a volume's clone).
		klog.ErrorS(err, "Keeping the container's state directory", "id", c.ID)
	} else {
		os.RemoveAll(m.stateDir(c.ID))
	}
	dead := filepath.Join(m.opts.Root, ".del-"+c.ID)
	if err := os.Rename(m.dir(c.ID), dead); err == nil {
		os.RemoveAll(dead)
	}
	m.opts.Images.Release(c.ID)
	m.cgroupMu.Lock()
	m.removeDefaultCgroupParent()
	m.cgroupMu.Unlock()
}

// client returns a copy of a container (its state as of now) and its
// shim, if live.
func (m *Manager) client(id string) (*Container, *live, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, err := m.resolve(id)
	if err != nil {
		return nil, nil, err
	}
	return c.copy(), m.live[c.ID], nil
}

// startShim starts the container's shim, which runs the runtime's create;
// the shim opens the container's log beneath logDir, the pod's log
// directory.
func (m *Manager) startShim(c *Container, rt *oci.Runtime, logDir string, l *live) {
	start := time.Now()
	m.cgroupMu.RLock() // until the runtime's create has made the container's cgroups
	client, pid, err := shim.Start(context.Background(), m.opts.ShimBinary, protocol.Config{
		Version: protocol.Version, ID: c.ID, Bundle: m.bundle(c.ID), Runtime: *rt,
		Dir: m.shimDir(c.ID), Socket: c.Socket, LogPath: c.LogPath, LogDir: logDir,
		Tty: c.config.GetTty(), Stdin: c.config.GetStdin(), StdinOnce: c.config.GetStdinOnce(),
	})
	m.cgroupMu.RUnlock()
	if err == nil {
		// Before the container is ready: a StartContainer waits for it.
		m.mu.Lock()
		cc := c.copy()
		m.mu.Unlock()
		m.hooks().PostCreateContainer(context.Background(), m.podOf(cc), cc)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l.client, l.err = client, err
	close(l.ready)
	if err != nil {
		close(l.exited)
		return
	}
	klog.V(2).InfoS("Container's shim ready", "id", c.ID, "duration", time.Since(start))
	if m.containers[c.ID] == c {
		c.ShimPid, c.ShimStart, c.ShimBoot = pid, proc.StartTime(pid), proc.BootID()
		m.save(c)
	}
	m.follow(c, l)
}

// image resolves a new container's image for its pod's runtime handler
// and checks that the handler's pods run its platform now: the emulator a
// foreign image needs may have been unregistered since the pull, which
// would fail the container with "exec format error".
func (m *Manager) image(ref, handler string) (*image.Image, error) {
	if m.opts.Platforms == nil {
		return m.opts.Images.Get(ref)
	}
	img, err := m.opts.Images.Find(ref, m.opts.Platforms.Want(handler))
	if errors.Is(err, image.ErrNotFound) {
		// A name held only for platforms the handler does not run (now):
		// Check says why, rather than "not found".
		if other, gerr := m.opts.Images.Get(ref); gerr == nil {
			img, err = other, nil
		}
	}
	if err != nil {
		return nil, err
	}
	if err := m.opts.Platforms.Check(handler, ref, img.Platform); err != nil {
		return nil, err
	}
	return img, nil
}

// Start starts a created container. A container that cannot start (say,
// its command is not in the image) ends Exited with reason StartError and
// the runtime's message.
func (m *Manager) Start(ctx context.Context, id string) error {
	c, err := m.start(ctx, id)
	if err != nil {
		return err
	}
	m.hooks().PostStartContainer(ctx, m.podOf(c), c)
	return nil
}

// start is Start; it returns a copy of the container started.
func (m *Manager) start(ctx context.Context, id string) (*Container, error) {
	c, l, err := m.client(id)
	if err != nil {
		return nil, err
	}
	if c.State != Created {
		return nil, fmt.Errorf("%w: container %s is %s, not created", ErrNotRunning, c.ID, stateName(c.State))
	}
	if l == nil {
		return nil, fmt.Errorf("%w: container %s has no shim", ErrNotRunning, c.ID)
	}
	m.mu.Lock()
	if l.starting {
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: container %s is being started by another request", ErrNotRunning, c.ID)
	}
	l.starting = true
	m.mu.Unlock()
	select {
	case <-l.ready:
	case <-ctx.Done():
		m.mu.Lock()
		l.starting = false
		m.mu.Unlock()
		return nil, ctx.Err()
	}
	err = l.err
	startedAt := time.Now()
	if err == nil {
		err = m.runtimeStart(ctx, c, l)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.containers[c.ID]
	if cur == nil {
		return nil, fmt.Errorf("%w: container %s was removed while it started", ErrNotFound, c.ID)
	}
	c = cur
	if err != nil {
		c.Reason, c.Message = "StartError", err.Error()
		if c.State != Exited {
			c.State, c.ExitCode, c.FinishedAt = Exited, 128, time.Now()
		}
		m.save(c)
		m.publish(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, c)
		return nil, fmt.Errorf("start container %s: %w", c.ID, err)
	}
	// A quick container may have exited already: it did start.
	c.StartedAt = startedAt
	if c.State == Created {
		c.State = Running
	}
	if err := m.save(c); err != nil {
		return nil, err
	}
	m.publish(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, c)
	if c.State == Exited {
		m.publish(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, c)
	}
	return c.copy(), nil
}

// runtimeStart runs the runtime's start and tells the shim. When the
// start fails, the container's init is killed, and its exit recorded by
// follow.
func (m *Manager) runtimeStart(ctx context.Context, c *Container, l *live) error {
	rt := m.runtimeOf(c)
	if rt == nil {
		return fmt.Errorf("%w: runtime handler %q is gone", ErrNotRunning, c.Handler)
	}
	err := m.hooks().StartContainer(ctx, m.podOf(c), c.copy())
	if err == nil {
		err = rt.Start(ctx, c.ID)
	}
	if err != nil {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if kerr := rt.Kill(kctx, c.ID, syscall.SIGKILL, true); kerr != nil {
			klog.V(2).InfoS("Killing a container that failed to start", "id", c.ID, "err", kerr)
		}
		select {
		case <-l.exited:
		case <-time.After(5 * time.Second):
		}
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := l.client.Started(sctx); err != nil {
		// The container runs; the shim learns it at the next reconnect.
		klog.ErrorS(err, "Telling the shim that its container started", "id", c.ID)
	}
	return nil
}

func stateName(s State) string { return strings.ToLower(strings.TrimPrefix(string(s), "CONTAINER_")) }

// Stop sends the image's stop signal (or SIGTERM), waits up to timeout for
// the container to exit, then kills it. Stopping a container that is not
// running, or unknown, is not an error; one whose shim does not answer is
// stopped through the runtime, and an error says when that fails.
func (m *Manager) Stop(ctx context.Context, id string, timeout time.Duration) error {
	c, l, err := m.client(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if c.State == Unknown && l == nil {
		return m.stopWithoutShim(ctx, c)
	}
	if l == nil || (c.State != Running && c.State != Created) {
		return nil
	}
	select {
	case <-l.ready:
	case <-ctx.Done():
		return ctx.Err()
	}
	if l.err != nil {
		return nil // the shim never created it: nothing runs
	}
	if timeout > 0 {
		// The grace period runs from the request, not from when the
		// runtime has delivered the signal (a runtime's start-up is
		// seconds on a slow node).
		grace := time.NewTimer(timeout)
		defer grace.Stop()
		sig := m.stopSignal(c)
		if err := m.kill(ctx, c, sig, false); err != nil {
			klog.V(2).InfoS("Stop signal not delivered", "id", c.ID, "signal", sig, "err", err)
		}
		select {
		case <-l.exited:
			return m.stopped(ctx, c.ID)
		case <-grace.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := m.kill(ctx, c, syscall.SIGKILL, true); err != nil {
		klog.V(2).InfoS("SIGKILL not delivered", "id", c.ID, "err", err)
	}
	select {
	case <-l.exited:
		return m.stopped(ctx, c.ID)
	case <-time.After(30 * time.Second):
		// The processes may be gone and the shim hung: then it is lost.
		m.mu.Lock()
		if cur := m.containers[c.ID]; cur != nil && m.live[c.ID] == l {
			m.unreachable(cur, errors.New("it reports no exit 30 s after SIGKILL"))
		}
		m.mu.Unlock()
		return m.stopped(ctx, c.ID)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopped is Stop's end once the container's shim has recorded its exit,
// or has been lost: a container left Unknown is stopped through the
// runtime.
func (m *Manager) stopped(ctx context.Context, id string) error {
	m.mu.Lock()
	c := m.containers[id]
	var cur *Container
	if c != nil && c.State == Unknown && m.live[id] == nil {
		cur = c.copy()
	}
	m.mu.Unlock()
	if cur == nil {
		return nil
	}
	return m.stopWithoutShim(ctx, cur)
}

// kill sends sig to the container's init, or to all its processes,
// through the runtime.
func (m *Manager) kill(ctx context.Context, c *Container, sig syscall.Signal, all bool) error {
	rt := m.runtimeOf(c)
	if rt == nil {
		return fmt.Errorf("runtime handler %q is gone", c.Handler)
	}
	return rt.Kill(ctx, c.ID, sig, all)
}

// stopWithoutShim stops a container whose shim does not answer
// (Unknown): it kills its processes through the runtime and waits until
// the runtime reports them gone. A shim that still runs records the exit
// once it answers again (retry); a container whose shim has ended without
// an exit file is recorded exited with its status unknown.
func (m *Manager) stopWithoutShim(ctx context.Context, c *Container) error {
	rt := m.runtimeOf(c)
	if rt == nil {
		return fmt.Errorf("container %s: runtime handler %q is gone: cannot stop it", c.ID, c.Handler)
	}
	klog.InfoS("Stopping a container whose shim does not answer, through the runtime", "id", c.ID)
	if err := rt.Kill(ctx, c.ID, syscall.SIGKILL, true); err != nil && !errors.Is(err, oci.ErrNotFound) {
		klog.V(2).InfoS("SIGKILL through the runtime", "id", c.ID, "err", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := rt.State(ctx, c.ID)
		if errors.Is(err, oci.ErrNotFound) || err == nil && s.Status == "stopped" {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %s did not stop after SIGKILL through the runtime (%v)", c.ID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur := m.containers[c.ID]; cur != nil && cur.State == Unknown && !shimAlive(cur) {
		if exit, err := protocol.ReadExit(m.shimDir(c.ID)); err == nil {
			m.recordExit(cur, exit)
		} else {
			m.recordLostExit(cur, "pier-shim of this container died; pier killed the container through the runtime; its exit status is unknown")
		}
	}
	return nil
}

// stopSignal is the image's STOPSIGNAL, or SIGTERM.
func (m *Manager) stopSignal(c *Container) syscall.Signal {
	img, err := m.opts.Images.Get(c.ImageID)
	if err != nil || img.Config == nil || img.Config.Config.StopSignal == "" {
		return syscall.SIGTERM
	}
	s := strings.TrimPrefix(strings.ToUpper(img.Config.Config.StopSignal), "SIG")
	if n, err := strconv.Atoi(s); err == nil {
		return syscall.Signal(n)
	}
	if sig := unix.SignalNum("SIG" + s); sig != 0 {
		return sig
	}
	return syscall.SIGTERM
}

// Remove kills the container if it runs and deletes it. Removing an
// unknown container is not an error.
func (m *Manager) Remove(ctx context.Context, id string) error {
	if err := m.Stop(ctx, id, 0); err != nil {
		return err
	}
	m.mu.Lock()
	c, err := m.resolve(id)
	if errors.Is(err, ErrNotFound) {
		m.mu.Unlock()
		return nil
	}
	if err != nil {
		m.mu.Unlock()
		return err
	}
	delete(m.containers, c.ID)
	delete(m.live, c.ID)
	delete(m.cpu, c.ID)
	delete(m.layers, c.ID)
	for name, cid := range m.names {
		if cid == c.ID {
			delete(m.names, name)
		}
	}
	m.publish(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, c)
	m.mu.Unlock()
	m.hooks().RemoveContainer(ctx, m.podOf(c), c.copy())
	m.destroy(ctx, c)
	klog.V(2).InfoS("Container removed", "id", c.ID)
	return nil
}

// ExecResult is how an ExecSync process ended and what it printed.
type ExecResult struct {
	ExitCode       int // exit status, or 128+signal
	Stdout, Stderr []byte
	TimedOut       bool // killed at the timeout
}

// Bounds on the ExecSync requests (exec probes) that run at once: each
// costs an exec helper, the runtime's exec and up to 2 x 16 MiB of output
// in pierd. A request beyond them waits for a slot while its timeout and
// its context allow (kubelet's probes must not fail because others run),
// then fails with ErrBusy.
const (
	MaxExecsPerContainer = 8
	MaxExecs             = 64
)

// ErrBusy: a request found no free slot before its timeout or context
// ended; the CRI layer answers ResourceExhausted.
var ErrBusy = errors.New("too many requests at once")

// ExecSync runs a command in a running container and waits for it. The
// timeout, when set, bounds the wait for a slot (MaxExecs) and the run
// together: the process is killed when it ends (TimedOut).
func (m *Manager) ExecSync(ctx context.Context, id string, cmd []string, timeout time.Duration) (*ExecResult, error) {
	c, l, err := m.client(id)
	if err != nil {
		return nil, err
	}
	if c.State != Running || l == nil || l.client == nil {
		return nil, fmt.Errorf("%w: container %s is %s", ErrNotRunning, c.ID, stateName(c.State))
	}
	if len(cmd) == 0 {
		return nil, fmt.Errorf("%w: no command to run", ErrInvalid)
	}
	start := time.Now()
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	// The container's slot first: one container's queue holds none of the
	// others'.
	for _, slots := range []chan struct{}{l.execs, m.execs} {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("container %s: waiting for one of the %d ExecSync slots per container (%d in all): %w", c.ID, MaxExecsPerContainer, MaxExecs, ctx.Err())
		case <-expired:
			return nil, fmt.Errorf("%w: container %s: no ExecSync slot came free within the request's timeout of %v (at most %d run at once per container, %d in all); retry later", ErrBusy, c.ID, timeout, MaxExecsPerContainer, MaxExecs)
		}
		defer func() { <-slots }()
	}
	if timeout > 0 {
		timeout = max(timeout-time.Since(start), time.Millisecond)
	}
	r, err := l.client.Exec(ctx, protocol.ExecRequest{Args: cmd, UID: c.User.UID, GID: c.User.GID, AdditionalGids: c.User.AdditionalGids, Timeout: timeout})
	if err != nil {
		if !errors.Is(err, shim.ErrNotRunning) && ctx.Err() == nil && exited(ctx, l.client) {
			// The runtime failed because the container ended under it
			// ("cannot exec in a stopped container", a setns of a gone
			// namespace): say so, as for an exec after the exit.
			return nil, fmt.Errorf("%w: container %s exited: %v", ErrNotRunning, c.ID, err)
		}
		return nil, shimErr(c.ID, err)
	}
	return &ExecResult{ExitCode: r.ExitCode, Stdout: r.Stdout, Stderr: r.Stderr, TimedOut: r.TimedOut}, nil
}

// exited reports whether the shim's container has exited, or does within
// exitGrace: its monitor reaps an ended init at once.
func exited(ctx context.Context, client *shim.Client) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	for deadline := time.Now().Add(exitGrace); ; time.Sleep(exitGrace / 5) {
		st, err := client.State(ctx)
		if err != nil || st.Status == protocol.StatusExited {
			return err == nil
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// exitGrace is how long exited waits for an ending container's exit.
const exitGrace = 250 * time.Millisecond

// shimErr adds this package's sentinel error to a shim's.
func shimErr(id string, err error) error {
	if errors.Is(err, shim.ErrNotRunning) {
		return fmt.Errorf("%w: container %s: %v", ErrNotRunning, id, err)
	}
	return err
}

// ReopenLog makes the shim reopen the container's log file.
func (m *Manager) ReopenLog(ctx context.Context, id string) error {
	c, l, err := m.client(id)
	if err != nil {
		return err
	}
	if c.State != Running || l == nil {
		return fmt.Errorf("%w: container %s is %s", ErrNotRunning, c.ID, stateName(c.State))
	}
	return l.client.ReopenLog(ctx)
}
