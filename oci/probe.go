package oci

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ProbeBinary is the executable a probe container holds when the host has
// it; otherwise it holds the running program's own binary. The probe never
// starts the container, so any executable does.
const ProbeBinary = "/bin/busybox"

// probeSpecVersion is the ociVersion of the probe's config.json. crun 1.8
// rejects 1.2.0 and later ("unknown version specified"); runc 1.1 is at
// 1.0.2.
const probeSpecVersion = "1.0.2"

// cgroupRoot is where the host's cgroup hierarchies are mounted: the v2
// hierarchy itself, or one directory per v1 hierarchy (and "unified").
const cgroupRoot = "/sys/fs/cgroup"

// Probe checks that the runtime can run a container on this host. It builds
// a minimal bundle in workDir (a rootfs holding a link to or copy of
// ProbeBinary), creates a container in its own namespaces and in a cgroup
// /pier-probe-<name>-<random> at the top of each hierarchy, kills it before
// it starts, and deletes it, leaving no bundle, cgroup, state directory or
// process behind. It returns nil, or an error carrying the runtime's own
// message, e.g. "crun create pier-probe-crun-1a2b3c4d: cgroups in hybrid
// mode not supported, drop all controllers from cgroupv2".
func (r *Runtime) Probe(ctx context.Context, workDir string) error {
	exe := ProbeBinary
	if _, err := os.Stat(exe); err != nil {
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("%s probe: %w", r.Name, err)
		}
	}
	return r.probe(ctx, workDir, exe)
}

func (r *Runtime) probe(ctx context.Context, workDir, exe string) error {
	id, err := probeID(r.Name)
	if err != nil {
		return fmt.Errorf("%s probe: %w", r.Name, err)
	}
	bundle := filepath.Join(workDir, id)
	defer os.RemoveAll(bundle)
	spec := probeSpec(id, filepath.Base(exe))
	if r.SystemdCgroup {
		spec.Linux.CgroupsPath = "system.slice:pier:" + id
	}
	if err := writeBundle(bundle, spec, exe); err != nil {
		return fmt.Errorf("%s probe: %w", r.Name, err)
	}

	// Clean up even when ctx is done.
	cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	pidFile := filepath.Join(bundle, "pid")
	if err := r.Create(ctx, id, bundle, CreateOpts{PidFile: pidFile}); err != nil {
		// runc and crun undo a failed create themselves; make sure.
		_ = r.Delete(cleanupCtx, id, true)
		if cerr := removeCgroup(id); cerr != nil {
			return errors.Join(err, cerr)
		}
		return err
	}
	// Kill the created init and wait for it, so that delete finds it
	// stopped: runc delete --force of a created container sleeps 100 ms.
	kerr := killPidFile(cleanupCtx, pidFile)
	derr := r.Delete(cleanupCtx, id, true)
	return errors.Join(kerr, derr, removeCgroup(id))
}

// probeSpec is the smallest container worth probing: its own mount, pid,
// ipc, uts and network namespaces, a read-only root with /proc and a /dev
// tmpfs (its device nodes must work where the bundle's file system is
// mounted nodev, as systemd mounts /run), no capabilities, a cgroup named
// after id.
func probeSpec(id, exe string) *specs.Spec {
	return &specs.Spec{
		Version: probeSpecVersion,
		Process: &specs.Process{
			Args:            []string{"/" + exe, "true"},
			Cwd:             "/",
			Env:             []string{"PATH=/"},
			NoNewPrivileges: true,
			Capabilities:    &specs.LinuxCapabilities{},
		},
		Root:     &specs.Root{Path: "rootfs", Readonly: true},
		Hostname: "pier-probe",
		// runc reads /proc/self/fd in the container before it execs.
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=64k"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: "/" + id,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.MountNamespace},
				{Type: specs.PIDNamespace},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.NetworkNamespace},
			},
		},
	}
}

// probeID is "pier-probe-<name>-<8 hex digits>", name reduced to the
// characters runtimes accept in an id.
func probeID(name string) (string, error) {
	// Unique enough for a probe; math/rand/v2, not crypto/rand, keeps
	// pier-shim (which imports this package) free of crypto/rand's 32 MiB
	// BSS, which the Go GC pacer counts as scannable globals.
	b := binary.LittleEndian.AppendUint32(nil, rand.Uint32())
	clean := strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			return c
		}
		return '_'
	}, name)
	return "pier-probe-" + clean + "-" + hex.EncodeToString(b), nil
}

// writeBundle writes config.json and a rootfs holding exe under its base
// name and the mount points of the spec's mounts.
func writeBundle(dir string, spec *specs.Spec, exe string) error {
	rootfs := filepath.Join(dir, spec.Root.Path)
	for _, m := range spec.Mounts {
		if err := os.MkdirAll(filepath.Join(rootfs, m.Destination), 0o755); err != nil {
			return err
		}
	}
	if err := linkOrCopy(exe, filepath.Join(rootfs, filepath.Base(exe))); err != nil {
		return err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600)
}

func linkOrCopy(src, dst string) error {
	if os.Link(src, dst) == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// killPidFile kills the process whose pid the runtime wrote to pidFile and
// waits until it has exited. It holds a pidfd, so it cannot hit another
// process that reused the pid. Where pidfds are missing it does nothing and
// leaves the kill to delete --force.
func killPidFile(ctx context.Context, pidFile string) error {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("pid file %s: %w", pidFile, err)
	}
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ENOSYS) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill %d: %w", pid, err)
	}
	// A pidfd polls readable once its process has exited.
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 100)
		if n > 0 {
			return nil
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for %d: %w", pid, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for %d: %w", pid, ctx.Err())
		}
	}
}

// removeCgroup removes the top-level cgroup name from every hierarchy where
// a runtime left it, and reports any it cannot remove.
func removeCgroup(name string) error {
	v1, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", name))
	var errs []error
	for _, dir := range append([]string{filepath.Join(cgroupRoot, name)}, v1...) {
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("cgroup %s left behind: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}
