package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"
)

// UserAgent is sent to registries.
var UserAgent = "pier"

// Pull fetches image ref for this node's platform, from the registry's
// mirrors in order and then the registry itself, and records it under ref.
func (s *Store) Pull(ctx context.Context, ref string, auth *Auth) (img *Image, err error) {
	var fetched atomic.Int64
	if s.opts.OnPull != nil {
		start := time.Now()
		defer func() {
			why := err
			if err != nil && ctx.Err() != nil {
				why = ctx.Err() // as the CRI interceptor reports it
			}
			s.opts.OnPull(PullStats{Bytes: fetched.Load(), Duration: time.Since(start), Err: why})
		}()
	}
	return s.pull(ctx, ref, auth, &fetched)
}

func (s *Store) pull(ctx context.Context, ref string, auth *Auth, fetched *atomic.Int64) (*Image, error) {
	named, err := normalize(ref)
	if err != nil {
		return nil, err
	}
	var errs []error
	regs := s.reg.Load() // one pull, one configuration
	for _, ep := range regs.endpoints(reference.Domain(named)) {
		img, err := s.pullFrom(ctx, regs, ep, named, auth, fetched)
		if err == nil {
			return img, nil
		}
		if errors.Is(err, ErrPlatform) || ctx.Err() != nil {
			return nil, err
		}
		if ep.mirror {
			klog.InfoS("Pull from mirror failed, trying the next endpoint", "image", named.String(), "mirror", ep.host, "err", err)
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, &multiError{errs}
}

// multiError joins the errors of every endpoint tried, on one line.
type multiError struct{ errs []error }

func (m *multiError) Unwrap() []error { return m.errs }
func (m *multiError) Error() string {
	msgs := make([]string, len(m.errs))
	for i, e := range m.errs {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// pullFrom pulls named from one endpoint, adding the layer bytes it
// fetches to fetched.
func (s *Store) pullFrom(ctx context.Context, regs *registries, ep endpoint, named reference.Named, auth *Auth, fetched *atomic.Int64) (*Image, error) {
	start := time.Now()
	refStr := named.String()
	reg, err := ep.registry()
	if err != nil {
		return nil, errorf(ErrInvalidReference, "registry %s: %v", ep.host, err)
	}
	repo := reg.Repo(reference.Path(named))
	var target name.Reference = repo.Tag("latest")
	if d, ok := named.(reference.Digested); ok {
		target = repo.Digest(d.Digest().String())
	} else if t, ok := named.(reference.Tagged); ok {
		target = repo.Tag(t.Tag())
	}
	authenticator, err := regs.authenticator(ep, repo, auth)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", ep.host, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	opts := []remote.Option{
		remote.WithContext(gctx),
		remote.WithAuth(authenticator),
		remote.WithTransport(regs.transport(ep)),
		remote.WithUserAgent(UserAgent),
		remote.WithJobs(s.opts.MaxConcurrentDownloads),
	}

	desc, err := remote.Get(target, opts...)
	if err != nil {
		return nil, classify(err, refStr, ep)
	}
	var img v1.Image
	switch {
	case desc.MediaType.IsIndex():
		idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, withKind(ErrCorrupt, fmt.Errorf("image index of %s: %w", refStr, err))
		}
		m, err := s.platform.pickManifest(refStr, idx)
		if err != nil {
			return nil, err
		}
		if img, err = remote.Image(repo.Digest(m.Digest.String()), opts...); err != nil {
			return nil, classify(err, refStr, ep)
		}
	case desc.MediaType.IsImage():
		if img, err = desc.Image(); err != nil {
			return nil, classify(err, refStr, ep)
		}
	default:
		return nil, fmt.Errorf("image %s: unsupported manifest type %q", refStr, desc.MediaType)
	}

	manifest, err := img.Manifest()
	if err != nil {
		return nil, classify(err, refStr, ep)
	}
	// The config is fetched digest-verified by the registry client.
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return nil, classify(err, refStr, ep)
	}
	config, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, withKind(ErrCorrupt, fmt.Errorf("image config of %s: %w", refStr, err))
	}
	// A config that names no platform is taken to be for any.
	if have := (Platform{OS: config.OS, Architecture: config.Architecture, Variant: config.Variant}); have.OS != "" && !s.platform.accepts(have) {
		return nil, s.platform.mismatch(refStr, []Platform{have})
	}
	layers, err := layersOf(manifest, config)
	if err != nil {
		return nil, errorf(ErrCorrupt, "image %s: %v", refStr, err)
	}

	chainIDs := make([]string, len(layers))
	var total int64
	for i, l := range layers {
		chainIDs[i] = l.ChainID
		total += l.Size
	}
	s.lease(chainIDs, 1)
	defer s.lease(chainIDs, -1)

	var done atomic.Int64
	stop := s.logProgress(refStr, total, &done)
	g.SetLimit(s.opts.MaxConcurrentDownloads)
	for _, l := range layers {
		g.Go(func() error {
			fetch := func() (io.ReadCloser, error) {
				rl, err := img.LayerByDigest(v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(l.Digest, "sha256:")})
				if err != nil {
					return nil, err
				}
				rc, err := rl.Compressed()
				if err != nil {
					return nil, classify(err, refStr, ep)
				}
				return &countingReadCloser{rc, fetched}, nil
			}
			return s.ensureLayer(gctx, l, fetch, &done)
		})
	}
	err = g.Wait()
	stop()
	if err != nil {
		return nil, fmt.Errorf("pull %s from %s: %w", refStr, ep.host, err)
	}

	id, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	size := manifest.Config.Size + total
	record := &Image{
		ID: id.String(), Manifest: mustDigest(img), MediaType: string(manifest.MediaType),
		Layers: layers, Size: size, Pulled: time.Now().UTC(), Config: config,
	}
	repoName := reference.TrimNamed(named).String()
	names := []string{repoName + "@" + desc.Digest.String()}
	if t, ok := named.(reference.Tagged); ok {
		names = append(names, repoName+":"+t.Tag())
	}
	stored, err := s.commit(record, rawConfig, names...)
	if err != nil {
		return nil, fmt.Errorf("record image %s: %w", refStr, err)
	}
	secs := time.Since(start).Seconds()
	klog.InfoS("Pulled image", "image", refStr, "id", stored.ID, "from", ep.host, "bytes", total,
		"seconds", fmt.Sprintf("%.2f", secs), "MBps", fmt.Sprintf("%.1f", float64(done.Load())/1e6/secs))
	return stored, nil
}

// countingReadCloser adds what is read through it to n.
type countingReadCloser struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingReadCloser) Read(p []byte) (int, error) {
	k, err := c.ReadCloser.Read(p)
	c.n.Add(int64(k))
	return k, err
}

func mustDigest(img v1.Image) string {
	d, err := img.Digest()
	if err != nil {
		return ""
	}
	return d.String()
}

// layersOf pairs the manifest's layer blobs with the config's diff IDs and
// computes each layer's chain ID.
func layersOf(m *v1.Manifest, c *v1.ConfigFile) ([]Layer, error) {
	if len(m.Layers) != len(c.RootFS.DiffIDs) {
		return nil, fmt.Errorf("manifest has %d layers but config has %d diff IDs", len(m.Layers), len(c.RootFS.DiffIDs))
	}
	layers := make([]Layer, len(m.Layers))
	chain := ""
	for i, d := range m.Layers {
		if !d.MediaType.IsLayer() {
			return nil, fmt.Errorf("layer %d has unsupported media type %q", i, d.MediaType)
		}
		diffID := c.RootFS.DiffIDs[i].String()
		if chain == "" {
			chain = diffID
		} else {
			h, _, _ := v1.SHA256(strings.NewReader(chain + " " + diffID))
			chain = h.String()
		}
		layers[i] = Layer{Digest: d.Digest.String(), DiffID: diffID, ChainID: chain, Size: d.Size, MediaType: string(d.MediaType)}
	}
	return layers, nil
}

// logProgress logs a pull's progress every ProgressInterval until stopped.
func (s *Store) logProgress(ref string, total int64, done *atomic.Int64) (stop func()) {
	t := time.NewTicker(s.opts.ProgressInterval)
	quit := make(chan struct{})
	go func() {
		for {
			select {
			case <-t.C:
				d := done.Load()
				klog.InfoS("Pulling image", "image", ref, "progress",
					fmt.Sprintf("%.1f of %.1f MB (%d%%)", float64(d)/1e6, float64(total)/1e6, percent(d, total)))
			case <-quit:
				return
			}
		}
	}()
	return func() { t.Stop(); close(quit) }
}

func percent(d, total int64) int64 {
	if total == 0 {
		return 100
	}
	return d * 100 / total
}
