// Package image is pier's image store. It pulls images from registries over
// the registry v2 protocol, verifies every blob's digest and size while
// streaming, unpacks each layer once into its own read-only directory keyed
// by chain ID (whiteouts converted for overlayfs), shares layers between
// images, and keeps the image index on disk.
//
// Each pull is for the platforms a runtime handler's pods may run
// (platform.Want): from a multi-platform image it takes the variant the
// handler prefers, and it refuses an image none of whose variants the
// handler runs. So one reference may be stored for several platforms (the
// node's own for most pods, linux/arm64 for an emulated handler's): a tag or
// digest belongs to one image per platform, and lookups for a handler
// (Find) take the variant it runs.
//
// On-disk layout under the store's root:
//
//	layers/<chain-id hex>/fs/          the unpacked layer
//	layers/<chain-id hex>/layer.json   its record (written before the directory is renamed into place)
//	images/<image-id hex>/config.json  the image config, byte for byte as pulled
//	images/<image-id hex>/image.json   the image record: tags, digests, layers
//
// Directories are built under a dot-name and renamed into place, and renamed
// to a dot-name before they are deleted, so a crash at any moment leaves
// either a complete object or a dot-name that the next start removes.
package image

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/internal/atomicfile"
	"github.com/pier-runtime/pier/internal/privdir"
	"github.com/pier-runtime/pier/platform"
)

// recordVersion is the version of image.json. Fields added since version
// 1 (platform, handler) are optional and older piers ignore them, so it
// stays 1: a record without a platform takes it from its config.
const recordVersion = 1

// Options configure a Store.
type Options struct {
	// Root is the store's directory, e.g. /var/lib/pier/image.
	Root string
	// MaxConcurrentDownloads bounds the layers one pull fetches at once.
	MaxConcurrentDownloads int
	// ProgressInterval is how often a running pull logs its progress.
	ProgressInterval time.Duration
	// Registries holds per-registry settings (mirrors, TLS), by host.
	Registries map[string]RegistryConfig
	// Pinned lists image references that are reported as pinned.
	Pinned []string
	// Keychain supplies credentials when the client sends none
	// (authn.DefaultKeychain reads docker's config.json).
	Keychain authn.Keychain
	// MaxLayerUncompressedBytes stops a layer that unpacks to more than
	// this many bytes (of tar stream); 0 bounds layers only by the store's
	// free space, which every pull checks.
	MaxLayerUncompressedBytes int64
	// PullProgressTimeout cancels a pull that receives nothing from a
	// registry for this long; 0 means DefaultPullProgressTimeout, negative
	// means never.
	PullProgressTimeout time.Duration
	// OnPull, if set, is told of each Pull when it ends (package metrics
	// counts them). It runs on the pulling goroutine: it must be quick.
	OnPull func(PullStats)
}

// PullStats is what one Pull did.
type PullStats struct {
	// Bytes is how many layer blob bytes were fetched from registries
	// (compressed, as sent), over every endpoint tried; layers already
	// stored are not fetched and not counted.
	Bytes int64
	// Duration is the whole Pull's, every endpoint tried.
	Duration time.Duration
	// Err is why the pull failed (FailureReason names it), nil if it did not.
	Err error
}

// Image is a stored image. Values returned by the Store are copies.
type Image struct {
	ID          string    `json:"id"` // config digest, "sha256:..."
	RepoTags    []string  `json:"repoTags"`
	RepoDigests []string  `json:"repoDigests"`
	Manifest    string    `json:"manifest"` // digest of the platform manifest
	MediaType   string    `json:"mediaType"`
	Layers      []Layer   `json:"layers"`
	Size        int64     `json:"size"` // config and compressed layers, as in the registry
	Pulled      time.Time `json:"pulled"`
	// Handler is the runtime handler of the last pull that resolved to
	// this image, as package platform names it (platform.Want.Handler:
	// the default handler's name for a pull that named none).
	Handler string `json:"handler,omitempty"`

	// Platform is what the image is built for: the variant chosen from an
	// index, or what a single image's config names (the zero Platform if
	// it names none). Records keep it as a string (imageRecord).
	Platform platform.Platform `json:"-"`
	Config   *v1.ConfigFile    `json:"-"`
	Pinned   bool              `json:"-"`
}

// Layer is one layer of an image.
type Layer struct {
	Digest    string `json:"digest"` // of the blob as stored in the registry
	DiffID    string `json:"diffID"` // of the uncompressed tar
	ChainID   string `json:"chainID"`
	Size      int64  `json:"size"` // of the blob
	MediaType string `json:"mediaType"`
}

// User returns the config's user as a uid or, if it is a name, as a
// username (the group part, if any, is not part of either).
func (img *Image) User() (uid *int64, username string) {
	if img.Config == nil || img.Config.Config.User == "" {
		return nil, ""
	}
	user, _, _ := strings.Cut(img.Config.Config.User, ":")
	var n int64
	if _, err := fmt.Sscanf(user, "%d", &n); err == nil && fmt.Sprint(n) == user {
		return &n, ""
	}
	return nil, user
}

type imageRecord struct {
	Version int `json:"version"`
	Image
	// PlatformName is Image.Platform as platform.Platform.String writes
	// it ("linux/arm64"); absent in records of older piers and for images
	// that name no platform.
	PlatformName string `json:"platform,omitempty"`
}

// Store is the image store.
type Store struct {
	root string
	opts Options
	reg  atomic.Pointer[registries] // replaced by Reconfigure

	mu       sync.Mutex
	pinned   map[string]bool          // by normalized reference or ID; replaced by Reconfigure
	images   map[string]*Image        // by ID
	layers   map[string]*layerRecord  // by chain ID
	inflight map[string]*unpackResult // layers being unpacked, by chain ID
	leases   map[string]int           // chain IDs a running pull or a container needs
	holds    map[string][]string      // chain IDs held, by holder (a container)
	flights  map[flightKey]*flight    // pulls under way

	// testHookHeld, if set, runs when Hold has resolved and leased.
	testHookHeld func()
}

// New opens (or creates) the store at opts.Root and loads its index.
func New(opts Options) (*Store, error) {
	if opts.MaxConcurrentDownloads <= 0 {
		opts.MaxConcurrentDownloads = 3
	}
	if opts.ProgressInterval <= 0 {
		opts.ProgressInterval = 5 * time.Second
	}
	if opts.PullProgressTimeout == 0 {
		opts.PullProgressTimeout = DefaultPullProgressTimeout
	}
	reg, err := newRegistries(opts.Registries, opts.Keychain, opts.PullProgressTimeout)
	if err != nil {
		return nil, err
	}
	pinned, err := pinnedSet(opts.Pinned)
	if err != nil {
		return nil, err
	}
	s := &Store{
		root:     opts.Root,
		opts:     opts,
		pinned:   pinned,
		images:   map[string]*Image{},
		layers:   map[string]*layerRecord{},
		inflight: map[string]*unpackResult{},
		leases:   map[string]int{},
		holds:    map[string][]string{},
		flights:  map[flightKey]*flight{},
	}
	s.reg.Store(reg)
	// Layers hold what images ship, setuid-root files and device nodes
	// included: no other user may reach them (overlayfs reaches the lower
	// directories with the credentials of whoever mounted it, root).
	for _, dir := range []string{s.layersDir(), s.imagesDir()} {
		if err := privdir.Make(dir, privdir.Private); err != nil {
			return nil, err
		}
		if err := removeDotEntries(dir); err != nil {
			return nil, err
		}
	}
	if err := s.loadLayers(); err != nil {
		return nil, err
	}
	if err := s.loadImages(); err != nil {
		return nil, err
	}
	klog.InfoS("Image store loaded", "root", s.root, "images", len(s.images), "layers", len(s.layers), "nodePlatform", platform.Native())
	return s, nil
}

func pinnedSet(refs []string) (map[string]bool, error) {
	pinned := map[string]bool{}
	for _, p := range refs {
		named, err := normalize(p)
		if err != nil {
			return nil, fmt.Errorf("pinned image: %w", err)
		}
		pinned[named.String()] = true
	}
	return pinned, nil
}

// CheckConfig reports what New or Reconfigure would refuse in registries
// and pinned images.
func CheckConfig(registries map[string]RegistryConfig, pinned []string) error {
	if _, err := newRegistries(registries, nil, 0); err != nil {
		return err
	}
	_, err := pinnedSet(pinned)
	return err
}

// Reconfigure replaces the registry settings and the pinned images, for
// pulls that start after it; a pull under way keeps the settings it began
// with. On error nothing changes.
func (s *Store) Reconfigure(registries map[string]RegistryConfig, pinned []string) error {
	reg, err := newRegistries(registries, s.opts.Keychain, s.opts.PullProgressTimeout)
	if err != nil {
		return err
	}
	set, err := pinnedSet(pinned)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reg.Store(reg)
	s.pinned = set
	return nil
}

func (s *Store) layersDir() string { return filepath.Join(s.root, "layers") }
func (s *Store) imagesDir() string { return filepath.Join(s.root, "images") }

func (s *Store) imageDir(id string) string {
	return filepath.Join(s.imagesDir(), strings.TrimPrefix(id, "sha256:"))
}

// removeDotEntries deletes what an interrupted write or delete left behind.
func removeDotEntries(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			klog.V(2).InfoS("Removing leftover of an interrupted operation", "path", filepath.Join(dir, e.Name()))
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) loadImages() error {
	entries, err := os.ReadDir(s.imagesDir())
	if err != nil {
		return err
	}
	type claim struct{ name, platform string }
	owner := map[claim]*Image{} // tag or digest, per platform -> image claiming it
	for _, e := range entries {
		img, err := s.loadImage(filepath.Join(s.imagesDir(), e.Name()))
		if err != nil {
			klog.ErrorS(err, "Dropping unreadable image record; pull the image again", "dir", e.Name())
			if err := s.deleteDir(filepath.Join(s.imagesDir(), e.Name())); err != nil {
				return err
			}
			continue
		}
		s.images[img.ID] = img
		// A crash while a tag moved between images of one platform may
		// leave it on both: the newer pull keeps it.
		for _, name := range slices.Concat(img.RepoTags, img.RepoDigests) {
			c := claim{name, platformString(img.Platform)}
			if prev := owner[c]; prev != nil && prev.Pulled.After(img.Pulled) {
				img.drop(name)
			} else {
				if prev != nil {
					prev.drop(name)
				}
				owner[c] = img
			}
		}
	}
	return nil
}

func (s *Store) loadImage(dir string) (*Image, error) {
	var rec imageRecord
	data, err := os.ReadFile(filepath.Join(dir, "image.json"))
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("image.json: %w", err)
	}
	if rec.Version < 1 || rec.Version > recordVersion {
		return nil, fmt.Errorf("image.json: unknown version %d (written by a newer pier?)", rec.Version)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, err
	}
	if h, _, err := v1.SHA256(bytes.NewReader(raw)); err != nil || h.String() != rec.ID {
		return nil, fmt.Errorf("config.json does not match image ID %s", rec.ID)
	}
	if rec.Config, err = v1.ParseConfigFile(bytes.NewReader(raw)); err != nil {
		return nil, err
	}
	// Records of older piers have no platform (and only Linux ones were
	// ever pulled): the config says it.
	if rec.Image.Platform, err = platform.Parse(rec.PlatformName); err != nil {
		rec.Image.Platform = configPlatform(rec.Config)
	}
	for _, l := range rec.Layers {
		if s.layers[l.ChainID] == nil {
			return nil, fmt.Errorf("layer %s of image %s is missing", l.ChainID, rec.ID)
		}
	}
	return &rec.Image, nil
}

// drop removes a tag or digest from the image.
func (img *Image) drop(name string) {
	img.RepoTags = slices.DeleteFunc(img.RepoTags, func(t string) bool { return t == name })
	img.RepoDigests = slices.DeleteFunc(img.RepoDigests, func(t string) bool { return t == name })
}

// copyOf returns a copy the caller may keep, with Pinned filled in.
func (s *Store) copyOf(img *Image) *Image {
	c := *img
	c.RepoTags = slices.Clone(img.RepoTags)
	c.RepoDigests = slices.Clone(img.RepoDigests)
	c.Layers = slices.Clone(img.Layers)
	c.Pinned = s.pinned[img.ID]
	for _, n := range slices.Concat(img.RepoTags, img.RepoDigests) {
		c.Pinned = c.Pinned || s.pinned[n]
	}
	return &c
}

// List returns every image, ordered by ID.
func (s *Store) List() []*Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*Image, 0, len(s.images))
	for _, img := range s.images {
		out = append(out, s.copyOf(img))
	}
	slices.SortFunc(out, func(a, b *Image) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Get finds an image by ID, unique ID prefix, tag or digest reference. A
// name that images of several platforms carry gives the one built for the
// node's own platform, else the one pulled last. It returns an error
// wrapping ErrNotFound when there is none.
func (s *Store) Get(ref string) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, err := s.resolve(ref)
	if err != nil {
		return nil, err
	}
	return s.copyOf(img), nil
}

// Find finds the image ref names for pods of want's runtime handler: by ID
// or unique ID prefix as Get; by tag or digest, of the images carrying it,
// the one whose platform want prefers (the one pulled last among equals).
// A name that only images of platforms want does not run carry is not
// found (ErrNotFound), with a message naming their platforms: the image is
// to be pulled for that handler.
func (s *Store) Find(ref string, want platform.Want) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	imgs, byName, err := s.lookup(ref)
	if err != nil {
		return nil, err
	}
	if !byName {
		return s.copyOf(imgs[0]), nil
	}
	var (
		best     *Image
		bestRank = -1
		have     []string
	)
	for _, img := range imgs {
		r := want.Rank(img.Platform)
		if r < 0 {
			have = append(have, img.Platform.String())
			continue
		}
		if best == nil || r < bestRank || (r == bestRank && newer(img, best)) {
			best, bestRank = img, r
		}
	}
	if best == nil {
		slices.Sort(have)
		runs := strings.ReplaceAll(want.Key(), ",", ", ")
		if runs == "" {
			runs = "no platform: no usable emulator is registered for theirs"
		}
		return nil, errorf(ErrNotFound, "image %s is on this node only for %s, which pods of %s do not run (they run %s): pull it for this runtime handler",
			ref, strings.Join(slices.Compact(have), ", "), handlerName(want.Handler), runs)
	}
	return s.copyOf(best), nil
}

// Named returns the images ref names: the one an ID or unique ID prefix
// names, or every image carrying a tag or digest (one per platform),
// ordered by ID. It returns an error wrapping ErrNotFound when there is
// none.
func (s *Store) Named(ref string) ([]*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	imgs, _, err := s.lookup(ref)
	if err != nil {
		return nil, err
	}
	out := make([]*Image, len(imgs))
	for i, img := range imgs {
		out[i] = s.copyOf(img)
	}
	return out, nil
}

func handlerName(h string) string {
	if h == "" {
		return "the default runtime handler"
	}
	return fmt.Sprintf("runtime handler %q", h)
}

// newer reports whether a was pulled after b (by ID among equals, so that
// the choice does not depend on map order).
func newer(a, b *Image) bool {
	if !a.Pulled.Equal(b.Pulled) {
		return a.Pulled.After(b.Pulled)
	}
	return a.ID > b.ID
}

// resolve is Get's choice, with s.mu held.
func (s *Store) resolve(ref string) (*Image, error) {
	imgs, byName, err := s.lookup(ref)
	if err != nil {
		return nil, err
	}
	if !byName {
		return imgs[0], nil
	}
	native := platform.Native()
	var best *Image
	for _, img := range imgs {
		switch n, bn := native.Matches(img.Platform), best != nil && native.Matches(best.Platform); {
		case best == nil, n && !bn, n == bn && newer(img, best):
			best = img
		}
	}
	return best, nil
}

// lookup returns the images ref names, ordered by ID: one for an ID or a
// unique ID prefix; for a tag or digest (byName), every image carrying it.
// Called with s.mu held.
func (s *Store) lookup(ref string) (imgs []*Image, byName bool, err error) {
	if isID(ref) {
		id := "sha256:" + strings.TrimPrefix(ref, "sha256:")
		if img := s.images[id]; img != nil {
			return []*Image{img}, false, nil
		}
		return nil, false, errorf(ErrNotFound, "image %s not found", ref)
	}
	if named, err := normalize(ref); err == nil {
		n := named.String()
		for _, img := range s.images {
			if slices.Contains(img.RepoTags, n) || slices.Contains(img.RepoDigests, n) {
				imgs = append(imgs, img)
			}
		}
		if len(imgs) > 0 {
			slices.SortFunc(imgs, func(a, b *Image) int { return strings.Compare(a.ID, b.ID) })
			return imgs, true, nil
		}
	}
	// A short ID, as `crictl images` prints them.
	if prefix := strings.TrimPrefix(ref, "sha256:"); len(prefix) >= 4 && len(prefix) < 64 && isHex(prefix) {
		var found *Image
		for id, img := range s.images {
			if strings.HasPrefix(strings.TrimPrefix(id, "sha256:"), prefix) {
				if found != nil {
					return nil, false, errorf(ErrNotFound, "image ID prefix %s is ambiguous: use more characters", ref)
				}
				found = img
			}
		}
		if found != nil {
			return []*Image{found}, false, nil
		}
	}
	return nil, false, errorf(ErrNotFound, "image %s not found", ref)
}

func isHex(s string) bool {
	return strings.Trim(s, "0123456789abcdef") == ""
}

// Remove deletes what ref names, each image with all its tags: an ID (or
// unique ID prefix) removes that image; a tag or digest removes every
// image carrying it, for every platform (the images one reference was
// pulled as for several runtime handlers go together). Layers no other
// image uses are deleted too. Removing an absent image is not an error.
func (s *Store) Remove(ref string) error {
	s.mu.Lock()
	imgs, _, err := s.lookup(ref)
	if err != nil {
		s.mu.Unlock()
		if _, perr := normalize(ref); perr != nil && !isID(ref) && !isHex(strings.TrimPrefix(ref, "sha256:")) {
			return perr
		}
		return nil
	}
	var errs []error
	for _, img := range imgs {
		delete(s.images, img.ID)
		if err := s.deleteDir(s.imageDir(img.ID)); err != nil {
			errs = append(errs, fmt.Errorf("remove image %s: %w", img.ID, err))
		}
	}
	doomed := s.unusedLayersLocked()
	s.mu.Unlock()
	removeAll(doomed)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, img := range imgs {
		klog.InfoS("Removed image", "id", img.ID, "tags", img.RepoTags, "platform", img.Platform, "layersFreed", len(doomed))
	}
	return nil
}

// unusedLayersLocked forgets the layers no image and no running pull uses,
// renames them to dot-names, and returns those for the caller to delete.
func (s *Store) unusedLayersLocked() []string {
	used := map[string]bool{}
	for _, img := range s.images {
		for _, l := range img.Layers {
			used[l.ChainID] = true
		}
	}
	var doomed []string
	for id := range s.layers {
		if used[id] || s.leases[id] > 0 {
			continue
		}
		dir := s.layerDir(id)
		dead := filepath.Join(s.layersDir(), ".del-"+filepath.Base(dir))
		if err := os.Rename(dir, dead); err != nil {
			klog.ErrorS(err, "Removing unused layer", "dir", dir)
			continue
		}
		delete(s.layers, id)
		doomed = append(doomed, dead)
	}
	return doomed
}

// deleteDir renames dir to a dot-name (so loaders skip it even if the
// removal is interrupted) and removes it.
func (s *Store) deleteDir(dir string) error {
	dead := filepath.Join(filepath.Dir(dir), ".del-"+filepath.Base(dir))
	if err := os.Rename(dir, dead); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		return err
	}
	if err := atomicfile.SyncDir(filepath.Dir(dir)); err != nil {
		return err
	}
	return os.RemoveAll(dead)
}

// commit records a pulled image under names, taking them from any other
// image of the same platform (a name belongs to one image per platform).
func (s *Store) commit(img *Image, rawConfig []byte, names ...string) (*Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.images[img.ID]
	isNew := cur == nil
	if isNew {
		cur = img
	}
	updated := *cur
	updated.RepoTags = slices.Clone(cur.RepoTags)
	updated.RepoDigests = slices.Clone(cur.RepoDigests)
	updated.Pulled = img.Pulled
	updated.Handler = img.Handler
	if img.Platform != (platform.Platform{}) {
		updated.Platform = img.Platform
	}
	for _, n := range names {
		if strings.Contains(n, "@") {
			if !slices.Contains(updated.RepoDigests, n) {
				updated.RepoDigests = append(updated.RepoDigests, n)
			}
		} else if !slices.Contains(updated.RepoTags, n) {
			updated.RepoTags = append(updated.RepoTags, n)
		}
	}
	if isNew {
		// One record, with its names: not one without, then another.
		if err := s.writeNewImage(&updated, rawConfig); err != nil {
			return nil, err
		}
	} else if err := writeRecord(s.imageDir(img.ID), &updated); err != nil {
		return nil, err
	}
	s.images[img.ID] = &updated
	// The names now belong to this image among those of its platform:
	// take them from any other of that platform.
	for _, other := range s.images {
		if other.ID == img.ID || other.Platform != updated.Platform {
			continue
		}
		before := len(other.RepoTags) + len(other.RepoDigests)
		moved := *other
		moved.RepoTags, moved.RepoDigests = slices.Clone(other.RepoTags), slices.Clone(other.RepoDigests)
		for _, n := range names {
			moved.drop(n)
		}
		if len(moved.RepoTags)+len(moved.RepoDigests) != before {
			if err := writeRecord(s.imageDir(other.ID), &moved); err != nil {
				return nil, err
			}
			s.images[other.ID] = &moved
		}
	}
	return s.copyOf(&updated), nil
}

// noteHandler records that a pull for handler resolved to image id (a pull
// that joined another's download, whose handler the record has).
func (s *Store) noteHandler(id, handler string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.images[id]
	if cur == nil || cur.Handler == handler {
		return
	}
	updated := *cur
	updated.Handler = handler
	if err := writeRecord(s.imageDir(id), &updated); err != nil {
		klog.ErrorS(err, "Recording the runtime handler of a pull", "image", id, "handler", handler)
		return
	}
	s.images[id] = &updated
}

// writeNewImage creates the image's directory: config and record are
// written under a dot-name that is renamed into place.
func (s *Store) writeNewImage(img *Image, rawConfig []byte) error {
	tmp, err := os.MkdirTemp(s.imagesDir(), ".tmp-")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(tmp, "config.json"), rawConfig, atomicfile.RecordMode); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := writeRecord(tmp, img); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, s.imageDir(img.ID)); err != nil {
		os.RemoveAll(tmp)
		return err
	}
	return atomicfile.SyncDir(s.imagesDir())
}

func writeRecord(dir string, img *Image) error {
	return atomicfile.WriteJSON(filepath.Join(dir, "image.json"), imageRecord{Version: recordVersion, Image: *img, PlatformName: platformString(img.Platform)})
}

// FsUsage is the space and inodes the store's layers use.
type FsUsage struct {
	Mountpoint string
	Bytes      uint64
	Inodes     uint64
}

// Usage returns the store's file-system usage, from the figures measured
// when each layer was unpacked.
func (s *Store) Usage() FsUsage {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := FsUsage{Mountpoint: s.root}
	for _, l := range s.layers {
		u.Bytes += l.Usage.Bytes
		u.Inodes += l.Usage.Inodes
	}
	return u
}

// Hold keeps the layers of the images ids (a container's own image and
// those it mounts as image volumes) from being deleted while holder (a
// container) uses them, even if the images are removed, and returns each
// image's chain IDs, in the order of ids. Holding again under the same
// holder replaces the previous hold. The images are resolved and their
// layers leased at once, so a concurrent Remove either happens before (and
// Hold fails with ErrNotFound, naming the image) or after (and keeps the
// layers).
func (s *Store) Hold(holder string, ids ...string) ([][]string, error) {
	s.mu.Lock()
	chains := make([][]string, len(ids))
	var all []string
	for i, id := range ids {
		img, err := s.resolve(id)
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		chains[i] = make([]string, len(img.Layers))
		for j, l := range img.Layers {
			chains[i][j] = l.ChainID
		}
		all = append(all, chains[i]...)
	}
	doomed := s.holdLocked(holder, all)
	s.mu.Unlock()
	removeAll(doomed)
	if s.testHookHeld != nil {
		s.testHookHeld()
	}
	return chains, nil
}

// HoldLayers holds chain IDs for holder (see Hold).
func (s *Store) HoldLayers(holder string, chainIDs []string) {
	s.mu.Lock()
	doomed := s.holdLocked(holder, chainIDs)
	s.mu.Unlock()
	removeAll(doomed)
}

// holdLocked replaces holder's hold by one on chainIDs and returns the
// layers that nothing uses any more, for the caller to delete.
func (s *Store) holdLocked(holder string, chainIDs []string) []string {
	s.leaseLocked(chainIDs, 1)
	old, held := s.holds[holder]
	s.holds[holder] = chainIDs
	if !held {
		return nil
	}
	s.leaseLocked(old, -1)
	return s.unusedLayersLocked()
}

// Release ends holder's hold; the layers of an image removed while the
// container ran are deleted now if nothing else uses them.
func (s *Store) Release(holder string) {
	s.mu.Lock()
	chainIDs, held := s.holds[holder]
	if !held {
		s.mu.Unlock()
		return
	}
	delete(s.holds, holder)
	s.leaseLocked(chainIDs, -1)
	doomed := s.unusedLayersLocked()
	s.mu.Unlock()
	removeAll(doomed)
}

// removeAll deletes the dot-named directories unusedLayersLocked returned.
func removeAll(doomed []string) {
	for _, dir := range doomed {
		if err := os.RemoveAll(dir); err != nil {
			klog.ErrorS(err, "Removing unused layer", "dir", dir)
		}
	}
}

// lease adds delta to the holds running pulls have on layers, so that a
// concurrent Remove does not delete a layer a pull is about to record.
func (s *Store) lease(chainIDs []string, delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaseLocked(chainIDs, delta)
}

func (s *Store) leaseLocked(chainIDs []string, delta int) {
	for _, id := range chainIDs {
		s.leases[id] += delta
		if s.leases[id] <= 0 {
			delete(s.leases, id)
		}
	}
}
