package container

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	metadata "github.com/checkpoint-restore/checkpointctl/lib"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/internal/atomicfile"
	"github.com/pier-runtime/pier/oci"
)

// ErrCheckpoint reports that the node cannot checkpoint a container now:
// CRIU is missing or the kernel lacks what it needs, the runtime cannot
// checkpoint, or a checkpoint of the container already runs.
var ErrCheckpoint = errors.New("cannot checkpoint")

// DefaultCheckpointTimeout bounds a checkpoint whose request gives no
// timeout: CRIU writes all of the container's memory to disk.
const DefaultCheckpointTimeout = 5 * time.Minute

// criuCheckTimeout bounds one `criu check`.
const criuCheckTimeout = 30 * time.Second

// CRIU is the node's CRIU: the binary the runtimes run (`criu` in PATH)
// and whether the kernel can checkpoint, asked once.
type CRIU struct {
	Binary string // looked up in PATH

	mu      sync.Mutex
	checked string // the binary that was checked
	err     error  // what its check found
}

// nodeCRIU is the CRIU that the runtimes find in pierd's PATH.
var nodeCRIU = &CRIU{Binary: "criu"}

// Ready says whether CRIU can checkpoint on this node: an error wrapping
// ErrCheckpoint tells what to install, or what `criu check` reported. The
// binary is looked up at each call (an operator may install it while
// pierd runs); `criu check` runs once per binary found, and its result is
// kept.
func (k *CRIU) Ready() error {
	path, err := exec.LookPath(k.Binary)
	if err != nil {
		return fmt.Errorf("%w: CRIU is not installed (%q not found in PATH): install the criu package (Debian: apt-get install criu) to checkpoint containers", ErrCheckpoint, k.Binary)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.checked == path {
		return k.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), criuCheckTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "check").CombinedOutput()
	k.checked, k.err = path, nil
	if err != nil {
		k.err = fmt.Errorf("%w: `%s check` failed (%v), so this kernel or this CRIU cannot checkpoint; a newer criu package or kernel may: %s", ErrCheckpoint, path, err, criuErrors(out))
		klog.InfoS("CRIU cannot checkpoint on this node", "criu", path, "report", criuErrors(out))
	} else {
		klog.V(2).InfoS("CRIU can checkpoint on this node", "criu", path)
	}
	return k.err
}

// criuErrors is the gist of what CRIU printed: its "Error" lines (else its
// last line), at most 1 KiB.
func criuErrors(out []byte) string {
	var errs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, "Error") {
			errs = append(errs, strings.TrimSpace(line))
		}
	}
	msg := strings.Join(errs, "; ")
	if msg == "" {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		msg = lines[len(lines)-1]
	}
	if len(msg) > 1024 {
		msg = msg[:1024] + "..."
	}
	return msg
}

// CheckLocation checks the path a checkpoint archive is to be written to:
// absolute, clean, without "..", naming a file.
func CheckLocation(location string) error {
	switch {
	case location == "":
		return fmt.Errorf("%w: empty checkpoint location", ErrInvalid)
	case !filepath.IsAbs(location):
		return fmt.Errorf("%w: checkpoint location %q is not an absolute path", ErrInvalid, location)
	case strings.ContainsRune(location, 0):
		return fmt.Errorf("%w: checkpoint location contains a NUL byte", ErrInvalid)
	case filepath.Clean(location) != location || location == "/":
		return fmt.Errorf("%w: checkpoint location %q is not a clean path to a file (no \"..\", \".\", \"//\" nor trailing \"/\")", ErrInvalid, location)
	}
	return nil
}

// Checkpoint dumps running container id with CRIU, through its runtime,
// into a tar archive at location and leaves the container running. The
// archive has the layout of containerd's and CRI-O's checkpoints, that
// kubelet and checkpointctl read: checkpoint/ (CRIU's images), config.dump,
// spec.dump, rootfs-diff.tar and deleted.files (the container's changes to
// its image), dump.log and stats-dump (CRIU's). It is written 0600 to a
// temporary file beside location, then renamed over it: a symlink there is
// replaced, never followed. A timeout of 0 is DefaultCheckpointTimeout.
func (m *Manager) Checkpoint(ctx context.Context, id, location string, timeout time.Duration) error {
	if err := CheckLocation(location); err != nil {
		return err
	}
	// Before the dump, which may take long: the archive's directory.
	if fi, err := os.Stat(filepath.Dir(location)); err != nil {
		return fmt.Errorf("%w: checkpoint location %s: %v", ErrInvalid, location, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("%w: checkpoint location %s: %s is not a directory", ErrInvalid, location, filepath.Dir(location))
	}
	c, err := m.Get(id)
	if err != nil {
		return err
	}
	if c.State != Running {
		return fmt.Errorf("%w: container %s is %s: only a running container can be checkpointed", ErrNotRunning, c.ID, stateName(c.State))
	}
	rt := m.runtimeOf(c)
	if rt == nil {
		return fmt.Errorf("%w: container %s: its runtime handler %q is gone", ErrCheckpoint, c.ID, c.Handler)
	}
	if err := nodeCRIU.Ready(); err != nil {
		return err
	}
	if _, busy := m.checkpoints.LoadOrStore(c.ID, true); busy {
		return fmt.Errorf("%w: a checkpoint of container %s already runs", ErrCheckpoint, c.ID)
	}
	defer m.checkpoints.Delete(c.ID)
	if timeout <= 0 {
		timeout = DefaultCheckpointTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	start := time.Now()
	stage, work, err := m.checkpointDirs(c.ID)
	defer os.RemoveAll(stage)
	defer os.RemoveAll(work)
	if err != nil {
		return err
	}
	images := filepath.Join(stage, metadata.CheckpointDirectory)
	specJSON, err := m.Spec(c.ID)
	if err != nil {
		return fmt.Errorf("container %s: read its OCI spec: %w", c.ID, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(specJSON, &spec); err != nil {
		return fmt.Errorf("container %s: parse its OCI spec: %w", c.ID, err)
	}

	err = rt.Checkpoint(ctx, c.ID, ociCheckpointOpts(images, work, &spec))
	if err != nil {
		m.thaw(c)
		msg := err.Error()
		if strings.Contains(msg, "unknown command") || strings.Contains(msg, "not supported") {
			return fmt.Errorf("%w: runtime handler %q cannot checkpoint (%s): use runc, or a crun built with CRIU support", ErrCheckpoint, c.Handler, msg)
		}
		if log := criuErrors(readTail(filepath.Join(work, metadata.DumpLogFile), 64<<10)); log != "" {
			msg += "; CRIU's dump.log: " + log
		}
		return fmt.Errorf("checkpoint container %s: %s: %w", c.ID, msg, errors.Unwrap(err))
	}
	dumped := time.Now()

	if err := m.stageCheckpoint(c, stage, work, specJSON, dumped); err != nil {
		return fmt.Errorf("checkpoint container %s: %w", c.ID, err)
	}
	if err := writeArchive(ctx, stage, location); err != nil {
		return fmt.Errorf("checkpoint container %s: write %s: %w", c.ID, location, err)
	}
	klog.V(2).InfoS("Container checkpointed", "id", c.ID, "location", location, "dump", dumped.Sub(start), "duration", time.Since(start))
	return nil
}

// checkpointDirs makes a checkpoint's directories afresh: the stage of its
// archive, with CRIU's images in checkpoint/ (as large as the container's
// memory: on disk, beside the container's upper directory), and CRIU's
// work directory (its logs) in the volatile state. A pierd killed
// meanwhile leaves them until the next checkpoint of the container, or its
// removal. It returns their paths also when it fails.
func (m *Manager) checkpointDirs(id string) (stage, work string, err error) {
	stage = filepath.Join(m.dir(id), "checkpoint")
	work = filepath.Join(m.stateDir(id), "checkpoint-work")
	for _, d := range []string{stage, work} {
		if err := os.RemoveAll(d); err != nil {
			return stage, work, err
		}
		// Mkdir, not MkdirAll: a container removed meanwhile stays gone.
		if err := os.Mkdir(d, 0o700); errors.Is(err, os.ErrNotExist) {
			return stage, work, fmt.Errorf("%w: %s (removed)", ErrNotFound, id)
		} else if err != nil {
			return stage, work, err
		}
	}
	return stage, work, os.Mkdir(filepath.Join(stage, metadata.CheckpointDirectory), 0o700)
}

// ociCheckpointOpts are the runtime's options for a container with spec.
func ociCheckpointOpts(images, work string, spec *specs.Spec) oci.CheckpointOpts {
	return oci.CheckpointOpts{ImagePath: images, WorkPath: work, ShellJob: spec.Process != nil && spec.Process.Terminal}
}

// thaw resumes a container that a failed or killed dump left frozen.
func (m *Manager) thaw(c *Container) {
	rt := m.runtimeOf(c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s, err := rt.State(ctx, c.ID); err != nil || s.Status != "paused" {
		return
	}
	if err := rt.Resume(ctx, c.ID); err != nil {
		klog.ErrorS(err, "A failed checkpoint left the container paused, and it cannot be resumed", "id", c.ID)
		return
	}
	klog.InfoS("Resumed a container that a failed checkpoint left paused", "id", c.ID)
}

// stageCheckpoint adds to stage, beside CRIU's images, what the archive
// holds besides: the records and the root file system's changes.
func (m *Manager) stageCheckpoint(c *Container, stage, work string, specJSON []byte, at time.Time) error {
	cfg := c.CRIConfig()
	config := metadata.ContainerConfig{
		ID:              c.ID,
		Name:            cfg.GetMetadata().GetName(),
		RootfsImage:     c.ImageID,
		RootfsImageRef:  c.ImageRef,
		RootfsImageName: cfg.GetImage().GetImage(),
		OCIRuntime:      c.Handler,
		CreatedTime:     c.CreatedAt,
		CheckpointedAt:  at,
	}
	if _, err := metadata.WriteJSONFile(config, stage, metadata.ConfigDumpFile); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(stage, metadata.SpecDumpFile), specJSON, 0o600); err != nil {
		return err
	}
	deleted, err := writeRootfsDiff(filepath.Join(m.dir(c.ID), "upper"), filepath.Join(stage, metadata.RootFsDiffTar))
	if err != nil {
		return fmt.Errorf("archive the root file system's changes: %w", err)
	}
	if len(deleted) > 0 {
		if _, err := metadata.WriteJSONFile(deleted, stage, metadata.DeletedFilesFile); err != nil {
			return err
		}
	}
	// CRIU's log and statistics, where checkpointctl looks for them.
	for _, name := range []string{metadata.DumpLogFile, "stats-dump"} {
		if err := os.Rename(filepath.Join(work, name), filepath.Join(stage, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// writeRootfsDiff writes the container's upper directory as a tar file at
// path, but for overlayfs's whiteouts (character devices 0/0): it returns
// the files they delete, as absolute paths in the container.
func writeRootfsDiff(upper, path string) (deleted []string, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	err = tarDir(w, upper, func(rel string, fi fs.FileInfo) bool {
		st, ok := fi.Sys().(*syscall.Stat_t)
		if fi.Mode()&fs.ModeCharDevice != 0 && ok && st.Rdev == 0 {
			deleted = append(deleted, "/"+rel)
			return false
		}
		return true
	})
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Close()
	}
	return deleted, err
}

// tarDir writes the tree under root as a tar stream to w, with names
// relative to root; keep, if set, says which entries go in. Symlinks are
// archived, never followed.
func tarDir(w io.Writer, root string, keep func(rel string, fi fs.FileInfo) bool) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == root {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if keep != nil && !keep(rel, fi) {
			return nil
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		return copyFile(tw, path, hdr.Size)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// copyFile copies the first size bytes of the regular file at path to w.
func copyFile(w io.Writer, path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyN(w, f, size); err != nil {
		return fmt.Errorf("%s: %w (did it shrink while being archived?)", path, err)
	}
	return nil
}

// writeArchive writes the tree under stage as an uncompressed tar
// archive at location, mode 0600, through a temporary file renamed over
// it.
func writeArchive(ctx context.Context, stage, location string) error {
	r, w := io.Pipe()
	go func() {
		w.CloseWithError(tarDir(&ctxWriter{ctx: ctx, w: w}, stage, nil))
	}()
	err := atomicfile.WriteFrom(location, r, 0o600)
	r.CloseWithError(err) // unblocks the writer if the file could not be written
	return err
}

// ctxWriter fails its writes once ctx is done: a checkpoint's timeout
// covers writing its archive.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// readTail reads at most the last n bytes of a file; nil if it cannot.
func readTail(path string, n int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return b
}
