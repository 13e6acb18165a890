package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	yaml "go.yaml.in/yaml/v3"

	"github.com/pier-runtime/pier/internal/atomicfile"
)

// The kubelet's settings that name its runtime: the configuration file's
// keys and the flags kubeadm writes into its flags file (a flag wins over
// the file). imageServiceEndpoint, when set, names the image service apart.
const (
	keyRuntime  = "containerRuntimeEndpoint"
	keyImage    = "imageServiceEndpoint"
	flagRuntime = "--container-runtime-endpoint"
	flagImage   = "--image-service-endpoint"
)

// endpoints is what the kubelet's files say of its runtime: each key or
// flag with its value, absent when missing.
type endpoints struct {
	Config map[string]*string `json:"config"`
	Flags  map[string]*string `json:"flags,omitempty"`
}

// Runtime is the endpoint the kubelet uses.
func (e *endpoints) Runtime() string {
	if v := e.Flags[flagRuntime]; v != nil {
		return *v
	}
	if v := e.Config[keyRuntime]; v != nil {
		return *v
	}
	// kubelet's default since the dockershim left.
	return "unix:///run/containerd/containerd.sock"
}

// kubeletFiles are the kubelet's configuration file and kubeadm's flags
// file (host paths; the latter may not exist).
type kubeletFiles struct {
	Config, Flags string
}

// read reads the endpoints from the kubelet's files.
func (k kubeletFiles) read(h *host) (*endpoints, error) {
	doc, err := k.load(h)
	if err != nil {
		return nil, err
	}
	e := &endpoints{Config: map[string]*string{}}
	for _, key := range []string{keyRuntime, keyImage} {
		if v := mapValue(doc, key); v != nil {
			s := v.Value
			e.Config[key] = &s
		} else {
			e.Config[key] = nil
		}
	}
	flags, err := os.ReadFile(h.path(k.Flags))
	if errors.Is(err, fs.ErrNotExist) || k.Flags == "" {
		return e, nil
	}
	if err != nil {
		return nil, err
	}
	e.Flags = map[string]*string{}
	for _, f := range []string{flagRuntime, flagImage} {
		if m := flagPattern(f).FindSubmatch(flags); m != nil {
			s := strings.Trim(string(m[2]), `"'`)
			e.Flags[f] = &s
		} else {
			e.Flags[f] = nil
		}
	}
	return e, nil
}

func (k kubeletFiles) load(h *host) (*yaml.Node, error) {
	b, err := os.ReadFile(h.path(k.Config))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("the kubelet's configuration file %s does not exist: give its path with --kubelet-config (kubelet --config)", k.Config)
		}
		return nil, err
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("the kubelet's configuration %s: %w", k.Config, err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); err == nil {
		return nil, fmt.Errorf("the kubelet's configuration %s holds more than one YAML document: pier-install edits only a single KubeletConfiguration", k.Config)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("the kubelet's configuration %s is not a KubeletConfiguration mapping", k.Config)
	}
	return &doc, nil
}

// apply writes want into the kubelet's files: each key and flag it names
// is set to its value or removed. Everything else in the files (comments,
// order, other settings) stays as it was.
func (k kubeletFiles) apply(h *host, want *endpoints) error {
	doc, err := k.load(h)
	if err != nil {
		return err
	}
	m := doc.Content[0]
	for _, key := range []string{keyRuntime, keyImage} {
		v, ok := want.Config[key]
		if !ok {
			continue
		}
		setMapValue(m, key, v)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	if err := writeKeepingMode(h.path(k.Config), buf.Bytes()); err != nil {
		return err
	}
	if want.Flags == nil || k.Flags == "" {
		return nil
	}
	flags, err := os.ReadFile(h.path(k.Flags))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, f := range []string{flagRuntime, flagImage} {
		v, ok := want.Flags[f]
		if !ok {
			continue
		}
		re := flagPattern(f)
		switch {
		case v == nil:
			// Gone with the space before it, but not with an opening quote
			// or the variable's "=".
			flags = re.ReplaceAllFunc(flags, func(m []byte) []byte {
				if m[0] == '"' || m[0] == '=' {
					return m[:1]
				}
				return nil
			})
		case re.Match(flags):
			flags = re.ReplaceAll(flags, []byte("${1}"+f+"="+*v))
		default:
			// A flag the file lacks is added to kubeadm's variable, quoted
			// or not.
			i := bytes.Index(flags, []byte("KUBELET_KUBEADM_ARGS="))
			if i < 0 {
				return fmt.Errorf("%s has no KUBELET_KUBEADM_ARGS= to add %s to", k.Flags, f)
			}
			at := i + len("KUBELET_KUBEADM_ARGS=")
			if at < len(flags) && flags[at] == '"' {
				at++
			}
			flags = append(flags[:at:at], append([]byte(f+"="+*v+" "), flags[at:]...)...)
		}
	}
	return writeKeepingMode(h.path(k.Flags), flags)
}

// flagPattern matches a flag and its value (--flag=value or --flag value)
// with the space before it.
func flagPattern(flag string) *regexp.Regexp {
	return regexp.MustCompile(`(^|[\s"=])` + regexp.QuoteMeta(flag) + `[= ]("[^"]*"|'[^']*'|[^\s"]+)`)
}

// writeKeepingMode replaces the file at path (the target of a symbolic
// link, not the link) keeping its mode and owner.
func writeKeepingMode(path string, data []byte) error {
	if r, err := filepath.EvalSymlinks(path); err == nil {
		path = r
	}
	perm := os.FileMode(0o644)
	fi, err := os.Stat(path)
	if err == nil {
		perm = fi.Mode().Perm()
	}
	if err := atomicfile.WriteFile(path, data, perm); err != nil {
		return err
	}
	if st, ok := statOwner(fi); ok {
		return os.Lchown(path, st.uid, st.gid)
	}
	return nil
}

type owner struct{ uid, gid int }

func statOwner(fi os.FileInfo) (owner, bool) {
	if fi == nil {
		return owner{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return owner{}, false
	}
	return owner{int(st.Uid), int(st.Gid)}, true
}

func mapValue(doc *yaml.Node, key string) *yaml.Node {
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func setMapValue(m *yaml.Node, key string, v *string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value != key {
			continue
		}
		if v == nil {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
		} else {
			// In place: the line's comment stays.
			n := m.Content[i+1]
			n.Kind, n.Tag, n.Value, n.Style, n.Content = yaml.ScalarNode, "!!str", *v, 0, nil
		}
		return
	}
	if v != nil {
		m.Content = append(m.Content,
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
			&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: *v})
	}
}

// healthz is the kubelet's health endpoint, from its configuration
// (healthzBindAddress, healthzPort; 127.0.0.1:10248 by default).
func (k kubeletFiles) healthz(h *host) string {
	addr, port := "127.0.0.1", "10248"
	if doc, err := k.load(h); err == nil {
		if v := mapValue(doc, "healthzBindAddress"); v != nil && v.Value != "" && v.Value != "0.0.0.0" {
			addr = v.Value
		}
		if v := mapValue(doc, "healthzPort"); v != nil {
			if n, err := strconv.Atoi(v.Value); err == nil && n > 0 {
				port = v.Value
			}
		}
	}
	return "http://" + net.JoinHostPort(addr, port) + "/healthz"
}

// waitHealthy waits until url answers 200 ok.
func waitHealthy(ctx context.Context, url string) error {
	c := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("the kubelet did not become healthy at %s: %v", url, last)
		case <-time.After(time.Second):
		}
	}
}
