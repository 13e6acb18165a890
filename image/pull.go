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

	"github.com/pier-runtime/pier/platform"
)

// UserAgent is sent to registries.
var UserAgent = "pier"

// Pull fetches image ref for the platforms want accepts (a runtime
// handler's: platform.Policy.Want), from the registry's mirrors in order
// and then the registry itself, and records it under ref for its platform.
// From a multi-platform image it takes the variant want prefers; a
// single-platform image is taken if want runs its platform, or if its
// config names none. Otherwise it fails with want's refusal, which wraps
// ErrPlatform and says what would make the image run.
//
// Concurrent pulls of one reference with the same credentials and the
// same choice of platforms (want.Key) share one download: a caller that
// gives up (its ctx ends) leaves the others' pull running; the download is
// cancelled only when every caller has left.
func (s *Store) Pull(ctx context.Context, ref string, auth *Auth, want platform.Want) (img *Image, err error) {
	start := time.Now()
	var fetched *atomic.Int64
	if s.opts.OnPull != nil {
		defer func() {
			why := err
			if err != nil && ctx.Err() != nil {
				why = ctx.Err() // as the CRI interceptor reports it
			}
			var n int64
			if fetched != nil {
				n = fetched.Load()
			}
			s.opts.OnPull(PullStats{Bytes: n, Duration: time.Since(start), Err: why})
		}()
	}
	named, err := normalize(ref)
	if err != nil {
		return nil, err
	}
	key := flightKey{ref: named.String(), want: want.Key()}
	if auth != nil {
		key.auth = *auth
	}
	s.mu.Lock()
	f := s.flights[key]
	if f == nil {
		f = s.startFlight(ctx, key, named, auth, want)
		fetched = &f.fetched // the bytes are counted once, for the caller that started the download
	} else {
		klog.V(2).InfoS("Joining a pull under way", "image", key.ref, "platforms", key.want)
	}
	f.waiters++
	s.mu.Unlock()

	select {
	case <-f.done:
		if f.err != nil {
			return nil, f.err
		}
		if f.img.Handler != want.Handler {
			s.noteHandler(f.img.ID, want.Handler)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		img := s.copyOf(f.img)
		img.Handler = want.Handler
		return img, nil
	case <-ctx.Done():
		s.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// The last caller left: stop the download, and let a later
			// pull start afresh rather than join a cancelled one.
			f.cancel()
			if s.flights[key] == f {
				delete(s.flights, key)
			}
		}
		s.mu.Unlock()
		return nil, fmt.Errorf("pull %s: %w", key.ref, ctx.Err())
	}
}

// flightKey identifies pulls that can share a download.
type flightKey struct {
	ref  string // normalized
	want string // platform.Want.Key
	auth Auth
}

// flight is a pull under way, shared by its waiters.
type flight struct {
	done    chan struct{} // closed when img and err are set
	img     *Image
	err     error
	cancel  context.CancelFunc
	waiters int // callers waiting; guarded by Store.mu
	fetched atomic.Int64
}

// startFlight starts pulling named in the background, detached from the
// caller's cancellation but keeping its values. Called with s.mu held.
func (s *Store) startFlight(ctx context.Context, key flightKey, named reference.Named, auth *Auth, want platform.Want) *flight {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f := &flight{done: make(chan struct{}), cancel: cancel}
	s.flights[key] = f
	go func() {
		img, err := s.pull(fctx, named, auth, want, &f.fetched)
		if err != nil && fctx.Err() != nil {
			err = fmt.Errorf("pull %s: %w", key.ref, context.Canceled)
		}
		cancel()
		s.mu.Lock()
		if s.flights[key] == f {
			delete(s.flights, key)
		}
		f.img, f.err = img, err
		s.mu.Unlock()
		close(f.done)
	}()
	return f
}

func (s *Store) pull(ctx context.Context, named reference.Named, auth *Auth, want platform.Want, fetched *atomic.Int64) (*Image, error) {
	var errs []error
	regs := s.reg.Load() // one pull, one configuration
	for _, ep := range regs.endpoints(reference.Domain(named)) {
		img, err := s.pullFrom(ctx, regs, ep, named, auth, want, fetched)
		if err == nil {
			return img, nil
		}
		if errors.Is(err, ErrPlatform) || errors.Is(err, ErrNoSpace) || ctx.Err() != nil {
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
func (s *Store) pullFrom(ctx context.Context, regs *registries, ep endpoint, named reference.Named, auth *Auth, want platform.Want, fetched *atomic.Int64) (*Image, error) {
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
		remote.WithRetryBackoff(retryBackoff),
	}

	desc, err := remote.Get(target, opts...)
	if err != nil {
		return nil, classify(err, refStr, ep)
	}
	var chosen platform.Platform // from the index, if any
	if desc.MediaType.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			return nil, withKind(ErrCorrupt, fmt.Errorf("image index of %s: %w", refStr, err))
		}
		m, err := chooseManifest(refStr, idx, want)
		if err != nil {
			return nil, err
		}
		chosen = fromV1(m.Platform)
		if m.Size > MaxManifestBytes {
			return nil, errorf(ErrTooLarge, "image index of %s declares a %d-byte manifest for %s; pier accepts at most %d MiB", refStr, m.Size, chosen, MaxManifestBytes>>20)
		}
		if desc, err = remote.Get(repo.Digest(m.Digest.String()), opts...); err != nil {
			return nil, classify(err, refStr, ep)
		}
	}
	if !desc.MediaType.IsImage() {
		return nil, fmt.Errorf("image %s: unsupported manifest type %q", refStr, desc.MediaType)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, classify(err, refStr, ep)
	}
	manifest, err := img.Manifest()
	if err != nil {
		return nil, withKind(ErrCorrupt, fmt.Errorf("manifest of %s: %w", refStr, err))
	}
	rawConfig, err := fetchConfig(refStr, ep, repo, manifest.Config, opts)
	if err != nil {
		return nil, err
	}
	config, err := v1.ParseConfigFile(bytes.NewReader(rawConfig))
	if err != nil {
		return nil, withKind(ErrCorrupt, fmt.Errorf("image config of %s: %w", refStr, err))
	}
	// A config that names no platform is taken to be for any.
	have := configPlatform(config)
	if have != (platform.Platform{}) && want.Rank(have) < 0 {
		return nil, want.Refuse(refStr, []platform.Platform{have})
	}
	if chosen == (platform.Platform{}) {
		chosen = have
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
				var kerr *kindError
				if errors.As(err, &kerr) { // explained already (limitTransport)
					return nil, err
				} else if err != nil {
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

	size := manifest.Config.Size + total
	record := &Image{
		ID: manifest.Config.Digest.String(), Manifest: mustDigest(img), MediaType: string(manifest.MediaType),
		Layers: layers, Size: size, Pulled: time.Now().UTC(), Config: config,
		Platform: chosen, Handler: want.Handler,
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
	klog.InfoS("Pulled image", "image", refStr, "id", stored.ID, "platform", chosen, "handler", want.Handler, "from", ep.host, "bytes", total,
		"seconds", fmt.Sprintf("%.2f", secs), "MBps", fmt.Sprintf("%.1f", float64(done.Load())/1e6/secs))
	return stored, nil
}

// retryBackoff is how requests that fail with a connection error, a 429
// or a 5xx are retried (by go-containerregistry's retrying transport):
// four attempts, 1, 2 and 4 seconds apart, plus any Retry-After the
// registry sends (limitTransport).
var retryBackoff = remote.Backoff{Duration: time.Second, Factor: 2, Jitter: 0.1, Steps: 4}

// fetchConfig fetches the image config d describes, refusing one over
// MaxConfigBytes by its declared size or by the bytes received. The
// content is digest-verified when it ends.
func fetchConfig(ref string, ep endpoint, repo name.Repository, d v1.Descriptor, opts []remote.Option) ([]byte, error) {
	if d.Size > MaxConfigBytes || d.Size < 0 {
		return nil, errorf(ErrTooLarge, "image config of %s at %s declares %d bytes; pier accepts at most %d MiB", ref, ep.host, d.Size, MaxConfigBytes>>20)
	}
	l, err := remote.Layer(repo.Digest(d.Digest.String()), opts...)
	if err != nil {
		return nil, classify(err, ref, ep)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, classify(err, ref, ep)
	}
	defer rc.Close()
	buf := bytes.NewBuffer(make([]byte, 0, d.Size+1))
	if _, err := buf.ReadFrom(io.LimitReader(rc, d.Size+1)); err != nil {
		var kerr *kindError
		if errors.As(err, &kerr) {
			return nil, fmt.Errorf("image config of %s: %w", ref, err)
		}
		return nil, errorf(ErrCorrupt, "image config of %s from %s: %v", ref, ep.host, err)
	}
	if int64(buf.Len()) != d.Size {
		return nil, errorf(ErrCorrupt, "image config of %s from %s: got %s bytes, the manifest says %d", ref, ep.host, sizeString(buf.Len(), d.Size), d.Size)
	}
	return buf.Bytes(), nil
}

func sizeString(got int, declared int64) string {
	if int64(got) > declared {
		return "more than " + fmt.Sprint(declared)
	}
	return fmt.Sprint(got)
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
