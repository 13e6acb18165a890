package sandbox

import (
	"fmt"
	"net/netip"
	"strings"
)

// validate checks a pod's config, all of which comes from the CRI client:
// names end up in CNI_ARGS ("K=V;K=V") and paths, the hostname and DNS
// settings in files containers read line by line, sysctl keys in paths
// under /proc/sys. Anything that could change the meaning of those is
// refused with ErrInvalid.
func (m *Manager) validate(c *Config) error {
	if c.Name == "" || c.Namespace == "" || c.UID == "" {
		return fmt.Errorf("%w: metadata needs a name, namespace and uid", ErrInvalid)
	}
	for _, f := range []struct{ what, v string }{{"name", c.Name}, {"namespace", c.Namespace}, {"uid", c.UID}} {
		if err := checkMetadata(f.v); err != nil {
			return fmt.Errorf("%w: pod %s %q: %v", ErrInvalid, f.what, f.v, err)
		}
	}
	if c.Hostname != "" && !c.HostNetwork { // a host network pod gets the node's
		if err := checkHostname(c.Hostname); err != nil {
			return fmt.Errorf("%w: hostname %q: %v", ErrInvalid, c.Hostname, err)
		}
	}
	if err := checkDNS(c.DNS); err != nil {
		return fmt.Errorf("%w: DNS config: %v", ErrInvalid, err)
	}
	if err := m.opts.Cgroups.CheckParent(c.CgroupParent); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	for key := range c.Sysctls {
		path, err := sysctlPath(key)
		if err != nil {
			return fmt.Errorf("%w: sysctl %q: %v", ErrInvalid, key, err)
		}
		switch ns := sysctlNamespace(path); {
		case ns == "":
			return fmt.Errorf("%w: sysctl %s is not namespaced: it cannot be set for one pod", ErrInvalid, key)
		case ns == "net" && c.HostNetwork, ns == "ipc" && c.HostIPC, ns == "uts" && c.HostNetwork:
			return fmt.Errorf("%w: sysctl %s cannot be set for a pod that shares the host's %s namespace", ErrInvalid, key, ns)
		}
	}
	return checkUserNamespace(c)
}

// maxName is the longest name, namespace or uid accepted: a DNS subdomain
// (what Kubernetes allows for names) is at most 253 bytes.
const maxName = 253

// checkMetadata accepts a pod name, namespace or uid: printable ASCII
// without spaces, and without ';', '=' (they separate CNI_ARGS) or '/'.
// Kubernetes sends DNS labels and subdomains and a UUID; critest's names
// have capitals.
func checkMetadata(s string) error {
	if len(s) > maxName {
		return fmt.Errorf("longer than %d bytes", maxName)
	}
	for _, r := range s {
		if r <= ' ' || r > '~' || strings.ContainsRune(";=/", r) {
			return fmt.Errorf("%q is not allowed", r)
		}
	}
	return nil
}

// maxHostname is the kernel's HOST_NAME_MAX.
const maxHostname = 64

// checkHostname accepts an RFC 1123 host name: dot-separated labels of
// letters, digits and '-', each 1 to 63 long, not starting or ending with
// '-'; at most 64 bytes (the kernel's limit).
func checkHostname(h string) error {
	if len(h) > maxHostname {
		return fmt.Errorf("longer than %d bytes", maxHostname)
	}
	return checkDomain(h, false)
}

// checkDomain checks an RFC 1123 name of at most 253 bytes; with
// underscores, '_' may appear in labels as well (search domains, which
// the node's resolv.conf may hold, are not always host names).
func checkDomain(d string, underscores bool) error {
	if len(d) > 253 {
		return fmt.Errorf("longer than 253 bytes")
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("label %q is empty or longer than 63 bytes", label)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with '-'", label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || underscores && r == '_') {
				return fmt.Errorf("%q is not allowed", r)
			}
		}
	}
	return nil
}

// checkDNS checks what goes into the pod's resolv.conf: servers are IP
// addresses, searches domain names (a trailing dot allowed), options
// "name" or "name:value" without spaces or control characters.
func checkDNS(dns *DNSConfig) error {
	if dns == nil {
		return nil
	}
	for _, s := range dns.Servers {
		if _, err := netip.ParseAddr(s); err != nil {
			return fmt.Errorf("server %q is not an IP address", s)
		}
	}
	for _, s := range dns.Searches {
		if s == "." {
			continue
		}
		if err := checkDomain(strings.TrimSuffix(s, "."), true); err != nil {
			return fmt.Errorf("search %q: %v", s, err)
		}
	}
	for _, o := range dns.Options {
		name, value, hasValue := strings.Cut(o, ":")
		if name == "" || hasValue && value == "" {
			return fmt.Errorf("option %q is not name or name:value", o)
		}
		for _, r := range o {
			if r <= ' ' || r > '~' {
				return fmt.Errorf("option %q: %q is not allowed", o, r)
			}
		}
	}
	return nil
}
