package sandbox

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pier-runtime/pier/internal/atomicfile"
)

// Paths of the pod files containers mount.
func (sb *Sandbox) HostnamePath() string   { return filepath.Join(sb.Dir, "hostname") }
func (sb *Sandbox) HostsPath() string      { return filepath.Join(sb.Dir, "hosts") }
func (sb *Sandbox) ResolvConfPath() string { return filepath.Join(sb.Dir, "resolv.conf") }

// writeFiles writes the pod's hostname, hosts and resolv.conf, not durably:
// a reboot ends the pod that mounts them.
func (m *Manager) writeFiles(sb *Sandbox) error {
	c := sb.Config
	if err := atomicfile.Replace(sb.HostnamePath(), []byte(c.Hostname+"\n"), 0o644); err != nil {
		return err
	}
	var hosts []byte
	if c.HostNetwork {
		var err error
		if hosts, err = os.ReadFile(m.opts.Hosts); err != nil {
			return fmt.Errorf("read the node's hosts file: %w", err)
		}
	} else {
		hosts = []byte(podHosts(c.Hostname, sb.IPs))
	}
	if err := atomicfile.Replace(sb.HostsPath(), hosts, 0o644); err != nil {
		return err
	}
	resolv, err := m.resolvConf(c.DNS)
	if err != nil {
		return err
	}
	return atomicfile.Replace(sb.ResolvConfPath(), resolv, 0o644)
}

func podHosts(hostname string, ips []string) string {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file (pier).\n")
	b.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	for _, ip := range ips {
		fmt.Fprintf(&b, "%s\t%s\n", ip, hostname)
	}
	return b.String()
}

// resolvConf is the pod's resolv.conf: from its DNS config, or the node's.
func (m *Manager) resolvConf(dns *DNSConfig) ([]byte, error) {
	if dns == nil {
		b, err := os.ReadFile(m.opts.ResolvConf)
		if err != nil {
			return nil, fmt.Errorf("read the node's resolv.conf: %w", err)
		}
		return b, nil
	}
	var b strings.Builder
	for _, s := range dns.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(dns.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Searches, " "))
	}
	if len(dns.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
	}
	return []byte(b.String()), nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
