package image

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// RegistryConfig holds the settings of one registry host.
type RegistryConfig struct {
	// Mirrors are tried in order before the registry itself, as
	// "https://host[:port]" or "http://host[:port]" (plain HTTP).
	Mirrors []string `toml:"mirrors"`
	// Insecure lets pier talk plain HTTP to this registry when HTTPS fails.
	Insecure bool `toml:"insecure"`
	// SkipVerify accepts any TLS certificate from this registry.
	SkipVerify bool `toml:"skip_verify"`
	// MirrorsOnly never contacts the registry itself, only its mirrors (for
	// nodes that must not reach the registry, such as offline ones).
	MirrorsOnly bool `toml:"mirrors_only"`
}

// Auth is the credential a client sent with a pull. It is never logged.
type Auth struct {
	Username      string
	Password      string
	Auth          string // base64 "username:password"
	IdentityToken string
	RegistryToken string
	ServerAddress string
}

func (a *Auth) empty() bool {
	return a == nil || (a.Username == "" && a.Password == "" && a.Auth == "" && a.IdentityToken == "" && a.RegistryToken == "")
}

// endpoint is one place an image can be fetched from: a mirror or the
// registry itself.
type endpoint struct {
	host      string // host[:port]
	plainHTTP bool   // plain HTTP allowed
	mirror    bool
}

// registries resolves registry hosts to endpoints, transports and credentials.
type registries struct {
	config   map[string]RegistryConfig
	keychain authn.Keychain
	progress time.Duration // the pull progress timeout; <= 0: none

	mu         sync.Mutex
	transports map[string]http.RoundTripper // by host
}

func newRegistries(config map[string]RegistryConfig, keychain authn.Keychain, progress time.Duration) (*registries, error) {
	for host, c := range config {
		for _, m := range c.Mirrors {
			if _, err := parseMirror(m); err != nil {
				return nil, fmt.Errorf("registry %s: %w", host, err)
			}
		}
	}
	return &registries{config: config, keychain: keychain, progress: progress, transports: map[string]http.RoundTripper{}}, nil
}

func parseMirror(s string) (endpoint, error) {
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
		return endpoint{}, fmt.Errorf("mirror %q: want http(s)://host[:port]", s)
	}
	return endpoint{host: u.Host, plainHTTP: u.Scheme == "http", mirror: true}, nil
}

// endpoints lists where to fetch images of domain from, in order: its
// mirrors, then the registry itself.
func (r *registries) endpoints(domain string) []endpoint {
	var eps []endpoint
	for _, m := range r.config[domain].Mirrors {
		ep, _ := parseMirror(m) // validated in newRegistries
		eps = append(eps, ep)
	}
	if r.config[domain].MirrorsOnly && len(eps) > 0 {
		return eps
	}
	return append(eps, endpoint{host: domain, plainHTTP: r.plainHTTPAllowed(domain)})
}

// plainHTTPAllowed: loopback registries may fall back to HTTP (as
// containerd does), others only when configured insecure.
func (r *registries) plainHTTPAllowed(host string) bool {
	if r.config[host].Insecure {
		return true
	}
	h := host
	if sh, _, err := net.SplitHostPort(host); err == nil {
		h = sh
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// transport returns the HTTP transport for host, with its TLS settings, and
// refuses plain HTTP to a host that is not allowed it.
func (r *registries) transport(ep endpoint) http.RoundTripper {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t, ok := r.transports[ep.host]; ok {
		return t
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	if r.config[ep.host].SkipVerify {
		base.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // configured per registry
	}
	t := &limitTransport{next: &httpGuard{next: base, plainHTTP: ep.plainHTTP}, progress: r.progress}
	r.transports[ep.host] = t
	return t
}

// httpGuard refuses plain-HTTP requests unless they are allowed: the
// registry library itself falls back to HTTP for private addresses.
type httpGuard struct {
	next      http.RoundTripper
	plainHTTP bool
}

func (g *httpGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.plainHTTP {
		return nil, fmt.Errorf("plain HTTP to %s refused: list it as insecure in the registry configuration", req.URL.Host)
	}
	return g.next.RoundTrip(req)
}

// registry is the go-containerregistry name of an endpoint.
func (ep endpoint) registry() (name.Registry, error) {
	if ep.plainHTTP {
		return name.NewRegistry(ep.host, name.Insecure)
	}
	return name.NewRegistry(ep.host)
}

// authenticator picks the credentials for a request to ep: the client's
// credentials go only to the registry they were meant for, never to a mirror;
// otherwise the docker config.json keychain is asked.
func (r *registries) authenticator(ep endpoint, repo name.Repository, auth *Auth) (authn.Authenticator, error) {
	if !auth.empty() && (!ep.mirror || sameHost(auth.ServerAddress, ep.host)) {
		return authn.FromConfig(authn.AuthConfig{
			Username:      auth.Username,
			Password:      auth.Password,
			Auth:          auth.Auth,
			IdentityToken: auth.IdentityToken,
			RegistryToken: auth.RegistryToken,
		}), nil
	}
	if r.keychain == nil {
		return authn.Anonymous, nil
	}
	return r.keychain.Resolve(repo)
}

func sameHost(serverAddress, host string) bool {
	if serverAddress == "" {
		return false
	}
	if u, err := url.Parse(serverAddress); err == nil && u.Host != "" {
		serverAddress = u.Host
	}
	return strings.TrimSuffix(serverAddress, "/") == host
}

// classify gives a registry error its kind and a message naming the
// reference or host it concerns.
func classify(err error, ref string, ep endpoint) error {
	var kerr *kindError
	if errors.As(err, &kerr) { // already explained (limitTransport)
		return fmt.Errorf("pull %s from %s: %w", ref, ep.host, err)
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden || hasCode(terr, transport.UnauthorizedErrorCode, transport.DeniedErrorCode):
			return errorf(ErrUnauthorized, "pull %s from %s: unauthorized: check the pull credentials (%v)", ref, ep.host, err)
		case terr.StatusCode == http.StatusNotFound || hasCode(terr, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode):
			return errorf(ErrNotFound, "image %s not found at %s (%v)", ref, ep.host, err)
		case terr.StatusCode == http.StatusTooManyRequests || terr.StatusCode >= 500:
			return errorf(ErrUnavailable, "registry %s still answered %d after %d attempts while pulling %s; try again later (%v)", ep.host, terr.StatusCode, retryBackoff.Steps, ref, err)
		}
		return fmt.Errorf("pull %s from %s: %w", ref, ep.host, err)
	}
	var nerr net.Error
	var uerr *url.Error
	if errors.As(err, &nerr) || errors.As(err, &uerr) {
		return errorf(ErrUnavailable, "registry %s unreachable while pulling %s: %v", ep.host, ref, err)
	}
	return fmt.Errorf("pull %s from %s: %w", ref, ep.host, err)
}

func hasCode(terr *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range terr.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}
