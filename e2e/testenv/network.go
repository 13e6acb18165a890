package testenv

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Network is a CNI configuration for tests: pier's shipped conflist with
// a bridge, subnet and IPAM data directory of the test's own, so that tests
// leave nothing behind on the node's real pod network.
type Network struct {
	ConfDir string // holds the conflist
	DataDir string // host-local's IP allocations
	Bridge  string
	Subnet  string

	hadHostportChains bool   // portmap's shared chains existed before
	ipForward         []byte // net.ipv4.ip_forward before (the bridge plugin sets it)
}

// hostportChains are the nat chains the portmap plugin makes once and
// never removes, with the rules that jump to them.
var hostportChains = []struct {
	chain string
	jump  [][]string // rules that jump to it
}{
	{"CNI-HOSTPORT-DNAT", [][]string{
		{"PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"},
		{"OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "CNI-HOSTPORT-DNAT"},
	}},
	{"CNI-HOSTPORT-MASQ", [][]string{
		{"POSTROUTING", "-m", "comment", "--comment", "CNI portfwd requiring masquerade", "-j", "CNI-HOSTPORT-MASQ"},
	}},
	{"CNI-HOSTPORT-SETMARK", nil},
}

// shippedConflist is the path of pier's default CNI configuration.
func shippedConflist() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "deploy", "cni", "10-pier.conflist")
}

// NewNetwork writes the test network's configuration under dir.
func NewNetwork(dir, bridge, subnet string) (*Network, error) {
	n := &Network{ConfDir: filepath.Join(dir, "net.d"), DataDir: filepath.Join(dir, "ipam"), Bridge: bridge, Subnet: subnet}
	n.ipForward, _ = os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	n.hadHostportChains = exec.Command("iptables", "-t", "nat", "-S", "CNI-HOSTPORT-DNAT").Run() == nil
	data, err := os.ReadFile(shippedConflist())
	if err != nil {
		return nil, err
	}
	var list map[string]any
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", shippedConflist(), err)
	}
	list["name"] = "pier-" + bridge
	for _, p := range list["plugins"].([]any) {
		plugin := p.(map[string]any)
		if plugin["type"] != "bridge" {
			continue
		}
		plugin["bridge"] = bridge
		ipam := plugin["ipam"].(map[string]any)
		ipam["dataDir"] = n.DataDir
		ipam["ranges"] = []any{[]any{map[string]any{"subnet": subnet}}}
		delete(ipam, "subnet")
	}
	out, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(n.ConfDir, 0o755); err != nil {
		return nil, err
	}
	return n, os.WriteFile(filepath.Join(n.ConfDir, "10-test.conflist"), out, 0o644)
}

// Config is the [cni] table that points pierd at this network.
func (n *Network) Config() string {
	return fmt.Sprintf("[cni]\nconf_dir = %q\n", n.ConfDir)
}

// Allocations counts the IPs host-local has handed out.
func (n *Network) Allocations() int {
	entries, _ := os.ReadDir(filepath.Join(n.DataDir, "pier-"+n.Bridge))
	count := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "last_reserved_ip") && e.Name() != "lock" {
			count++
		}
	}
	return count
}

// Close deletes what the plugins made for the network as a whole: the
// bridge, portmap's shared chains (if they were not there before) and the
// ip_forward setting.
func (n *Network) Close() error {
	var errs []error
	if out, err := exec.Command("ip", "link", "del", n.Bridge).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
		errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", n.Bridge, err, out))
	}
	if !n.hadHostportChains {
		for _, c := range hostportChains {
			for _, rule := range c.jump {
				exec.Command("iptables", append([]string{"-t", "nat", "-D"}, rule...)...).Run()
			}
		}
		for _, c := range hostportChains {
			exec.Command("iptables", "-t", "nat", "-F", c.chain).Run()
			exec.Command("iptables", "-t", "nat", "-X", c.chain).Run()
		}
	}
	n.RemovePodRules()
	if len(n.ipForward) > 0 {
		os.WriteFile("/proc/sys/net/ipv4/ip_forward", n.ipForward, 0o644)
	}
	return errors.Join(errs...)
}

// RemovePodRules deletes the nat rules of this network's pods, and
// their chains: those left when the tests end, or those a node reboot
// takes away.
func (n *Network) RemovePodRules() {
	out, _ := exec.Command("iptables-save", "-t", "nat").Output()
	comment := `name: \"pier-` + n.Bridge + `\"`
	var script strings.Builder
	script.WriteString("*nat\n")
	chains := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "-A" || !strings.Contains(line, comment) {
			continue
		}
		if f[1] == "POSTROUTING" {
			script.WriteString("-D" + strings.TrimPrefix(line, "-A") + "\n")
		} else if strings.HasPrefix(f[1], "CNI-") {
			chains[f[1]] = true
		}
	}
	if len(chains) == 0 && !strings.Contains(script.String(), "-D") {
		return
	}
	for c := range chains {
		script.WriteString("-F " + c + "\n-X " + c + "\n")
	}
	script.WriteString("COMMIT\n")
	cmd := exec.Command("iptables-restore", "--noflush")
	cmd.Stdin = strings.NewReader(script.String())
	cmd.Run()
}
