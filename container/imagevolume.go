package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/internal/beneath"
	"github.com/pier-runtime/pier/sandbox"
)

// ImageVolume is an image mounted read-only into a container: a CRI mount
// with an image (Kubernetes' image volumes, KEP-4639). Its layers are held
// with the container's own (image.Store.Hold) until the container is
// removed, so a RemoveImage leaves them in place; they are mounted
// read-only at Dir (an overlay of the layers, no upper directory), and
// Source, Dir or the image_sub_path beneath it, is bind-mounted into the
// container.
type ImageVolume struct {
	ContainerPath string   `json:"containerPath"`
	ImageID       string   `json:"imageID"` // the image's config digest, as PullImage answers it
	ChainIDs      []string `json:"chainIDs"`
	Dir           string   `json:"dir"`
	Source        string   `json:"source,omitempty"` // set once mounted
}

// imageVolumeRefs checks the config's image mounts and returns the images
// they name, in order: an image mount must be read-only (the image is
// shared by every container that mounts it) and its sub-path a relative
// path without "..".
func imageVolumeRefs(cfg *runtimeapi.ContainerConfig) ([]string, error) {
	var refs []string
	for _, m := range cfg.GetMounts() {
		ref := m.GetImage().GetImage()
		if ref == "" {
			continue
		}
		if m.GetHostPath() != "" {
			return nil, fmt.Errorf("%w: mount %s has both a host path and an image: give one", ErrInvalid, m.GetContainerPath())
		}
		if !m.GetReadonly() {
			return nil, fmt.Errorf("%w: image volume %s must be read-only: an image is mounted read-only", ErrInvalid, m.GetContainerPath())
		}
		if m.GetContainerPath() == "" {
			return nil, fmt.Errorf("%w: image volume of %s has no container path", ErrInvalid, ref)
		}
		if sub := m.GetImageSubPath(); sub != "" {
			if err := beneath.Check(sub); err != nil {
				return nil, fmt.Errorf("%w: image volume %s: image_sub_path: %v: it must be a path inside the image", ErrInvalid, m.GetContainerPath(), err)
			}
		}
		refs = append(refs, ref)
	}
	return refs, nil
}

// newImageVolumes are the records of the config's image mounts, whose
// images and chain IDs Hold resolved.
func (m *Manager) newImageVolumes(id string, cfg *runtimeapi.ContainerConfig, imageIDs []string, chains [][]string) []ImageVolume {
	var vols []ImageVolume
	for _, mnt := range cfg.GetMounts() {
		if mnt.GetImage().GetImage() == "" {
			continue
		}
		i := len(vols)
		vols = append(vols, ImageVolume{
			ContainerPath: mnt.GetContainerPath(), ImageID: imageIDs[i], ChainIDs: chains[i],
			Dir: filepath.Join(m.stateDir(id), "volumes", strconv.Itoa(i)),
		})
	}
	return vols
}

// allChainIDs are the chain IDs a container holds: its image's and its
// image volumes'.
func (c *Container) allChainIDs() []string {
	all := c.ChainIDs
	for _, v := range c.ImageVolumes {
		all = append(all[:len(all):len(all)], v.ChainIDs...)
	}
	return all
}

// mountImageVolumes mounts each image volume's layers read-only at its
// Dir, and sets its Source: the sub-path the config asks for, resolved
// inside the image (a symbolic link in the image stays inside it).
func (m *Manager) mountImageVolumes(c *Container, pod *sandbox.Sandbox) error {
	if len(c.ImageVolumes) == 0 {
		return nil
	}
	parent := filepath.Join(m.stateDir(c.ID), "volumes")
	if err := os.Mkdir(parent, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if u := pod.Config.UserNamespace; u != nil {
		// The pod's root (its gid on the host) passes through to the
		// bind's source, as through the state directory (usernsDirs).
		_, gid := u.HostRoot()
		if err := os.Chown(parent, 0, int(gid)); err != nil {
			return err
		}
		if err := os.Chmod(parent, 0o710); err != nil {
			return err
		}
	}
	var subs []string
	for _, mnt := range c.config.GetMounts() {
		if mnt.GetImage().GetImage() != "" {
			subs = append(subs, mnt.GetImageSubPath())
		}
	}
	for i := range c.ImageVolumes {
		v := &c.ImageVolumes[i]
		if err := m.mountLayersReadOnly(v); err != nil {
			return fmt.Errorf("image volume %s: %w", v.ContainerPath, err)
		}
		src, err := resolveInImage(v.Dir, subs[i])
		if err != nil {
			return fmt.Errorf("%w: image volume %s: image_sub_path %q: %v", ErrInvalid, v.ContainerPath, subs[i], err)
		}
		v.Source = src
	}
	return nil
}

// mountLayersReadOnly mounts v's layers at v.Dir, read-only: an overlay
// of them, or a bind of the one layer of a single-layer image (overlayfs
// without an upper directory wants two).
func (m *Manager) mountLayersReadOnly(v *ImageVolume) error {
	if err := os.Mkdir(v.Dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	lower := make([]string, 0, len(v.ChainIDs))
	for i := len(v.ChainIDs) - 1; i >= 0; i-- {
		lower = append(lower, m.opts.Images.LayerDir(v.ChainIDs[i]))
	}
	flags := uintptr(unix.MS_RDONLY | unix.MS_NODEV | unix.MS_NOSUID)
	switch len(lower) {
	case 0:
		return fmt.Errorf("%w: the image has no layers", ErrInvalid)
	case 1:
		if err := unix.Mount(lower[0], v.Dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind its layer: %w", err)
		}
		if err := unix.Mount("", v.Dir, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
			unix.Unmount(v.Dir, unix.MNT_DETACH)
			return fmt.Errorf("make its layer read-only: %w", err)
		}
		return nil
	}
	opts := "lowerdir=" + strings.Join(lower, ":")
	if len(opts) >= os.Getpagesize() {
		return fmt.Errorf("%w: the image has too many layers (%d) for one overlay mount", ErrInvalid, len(lower))
	}
	if err := unix.Mount("overlay", v.Dir, "overlay", flags, opts); err != nil {
		return fmt.Errorf("mount its layers: %w", err)
	}
	return nil
}

// resolveInImage resolves sub beneath the mounted image dir as if dir were
// "/" (a symbolic link cannot lead out of it) and returns its path on the
// host; "" is dir itself. The mount is read-only, so the path found stays
// what it is.
func resolveInImage(dir, sub string) (string, error) {
	if sub == "" {
		return dir, nil
	}
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, sub, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
	if errors.Is(err, unix.ENOENT) {
		return "", errors.New("no such file or directory in the image")
	}
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	if path != dir && !strings.HasPrefix(path, dir+"/") {
		return "", fmt.Errorf("resolves to %s, outside the image", path)
	}
	return path, nil
}

// imageVolumeSources maps each image volume's container path to the
// source to bind there (SpecInput.ImageVolumes).
func (c *Container) imageVolumeSources() map[string]string {
	if len(c.ImageVolumes) == 0 {
		return nil
	}
	out := make(map[string]string, len(c.ImageVolumes))
	for _, v := range c.ImageVolumes {
		out[v.ContainerPath] = v.Source
	}
	return out
}

// ImageVolumeID is the image ID of the image volume at containerPath, ""
// if there is none.
func (c *Container) ImageVolumeID(containerPath string) string {
	for _, v := range c.ImageVolumes {
		if v.ContainerPath == containerPath {
			return v.ImageID
		}
	}
	return ""
}
