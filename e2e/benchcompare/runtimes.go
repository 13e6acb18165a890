package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// runtimes are the runtimes compared, peers first.
func runtimes(pierd string) []*runtimeDef {
	return []*runtimeDef{
		{
			key: "containerd-1.6", title: "containerd 1.6 (Debian)", bridge: "pcmp-ctd16", subnet: "10.231.0.0/16",
			helpers: "containerd-shim-runc-v2,pause",
			bins:    []string{"containerd-1.6/usr/bin/containerd", "containerd-1.6/usr/bin/containerd-shim-runc-v2"},
			cgroups: []string{"k8s.io"},
			start: func(in *instance) error {
				return in.startContainerd(filepath.Join(in.peers, "containerd-1.6/usr/bin"), containerd16Config)
			},
		},
		{
			key: "containerd-2.4.2", title: "containerd 2.4.2", bridge: "pcmp-ctd2", subnet: "10.232.0.0/16",
			helpers: "containerd-shim-runc-v2,pause",
			bins:    []string{"containerd-2.4.2/bin/containerd", "containerd-2.4.2/bin/containerd-shim-runc-v2"},
			cgroups: []string{"k8s.io"},
			start: func(in *instance) error {
				return in.startContainerd(filepath.Join(in.peers, "containerd-2.4.2/bin"), containerd2Config)
			},
		},
		{
			key: "crio-1.34.0", title: "CRI-O 1.34.0", bridge: "pcmp-crio", subnet: "10.233.0.0/16",
			helpers: "conmon,pause",
			bins:    []string{"crio-1.34.0/crio", "crio-1.34.0/pinns", "crio-1.34.0/conmon"},
			cgroups: []string{"crio", "crio-*"},
			start:   (*instance).startCRIO,
		},
		{
			key: "pier", title: "pier", bridge: "pcmp-pier", subnet: "10.234.0.0/16",
			helpers: "pier-shim,pier-shim-monitor",
			bins:    []string{pierd},
			start: func(in *instance) error {
				// At its default verbosity, as the peers log at info level.
				p, err := testenv.StartPierd(testenv.PierdOptions{Binary: pierd, Dir: in.dir, Config: in.net.Config(), NodeLogging: true})
				if err != nil {
					return err
				}
				in.pierd, in.socket, in.log = p, p.Socket, p.Log
				return nil
			},
		},
	}
}

// hostsDir makes containerd reach each registry over plain HTTP.
func (in *instance) hostsDir() (string, error) {
	dir := filepath.Join(in.dir, "certs.d")
	for _, r := range in.registry {
		d := filepath.Join(dir, r)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
		toml := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", r, r)
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(toml), 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// containerd16Config is a configuration (version 2) for Debian's
// containerd 1.6: everything under Dir. Its pods' sandboxes ask for
// oom_score_adj -998, which needs CAP_SYS_RESOURCE (root in a container may
// lack it): restrict_oom_score_adj keeps them at containerd's own (what
// peers.sh's runc-oom does for CRI-O, see crioRunc).
const containerd16Config = `version = 2
root = "{{Dir}}/root"
state = "{{Dir}}/state"
imports = []
oom_score = 0

[grpc]
  address = "{{Socket}}"
[ttrpc]
  address = "{{Socket}}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{{Dir}}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{Pause}}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{CNIBin}}"
    conf_dir = "{{CNIConf}}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{{Runc}}"
        Root = "{{Dir}}/runc"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{{Hosts}}"
`

// containerd2Config is a configuration (version 3) for containerd 2.4.2:
// everything under Dir, NRI off (its socket would be the node's).
const containerd2Config = `version = 3
root = "{{Dir}}/root"
state = "{{Dir}}/state"
imports = []
oom_score = 0

[grpc]
  address = "{{Socket}}"
[ttrpc]
  address = "{{Socket}}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{{Dir}}/opt"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.transfer.v1.local"]
  config_path = "{{Hosts}}"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{{Pause}}"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "{{Hosts}}"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{{CNIBin}}"]
    conf_dir = "{{CNIConf}}"
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{{Runc}}"
        Root = "{{Dir}}/runc"
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`

// expand fills a configuration template's {{Name}}s.
func expand(tmpl string, vars map[string]string) string {
	for k, v := range vars {
		tmpl = strings.ReplaceAll(tmpl, "{{"+k+"}}", v)
	}
	return tmpl
}

// startContainerd starts the containerd in bin (its shims beside it, first
// in PATH) with the configuration tmpl.
func (in *instance) startContainerd(bin, tmpl string) error {
	hosts, err := in.hostsDir()
	if err != nil {
		return err
	}
	in.socket = filepath.Join(in.dir, "containerd.sock")
	cfg := filepath.Join(in.dir, "config.toml")
	vars := map[string]string{"Dir": in.dir, "Socket": in.socket, "Hosts": hosts, "CNIConf": in.net.ConfDir,
		"CNIBin": cniBin, "Pause": in.pause, "Runc": runc}
	if err := os.WriteFile(cfg, []byte(expand(tmpl, vars)), 0o644); err != nil {
		return err
	}
	return in.startDaemon([]string{"PATH=" + bin + ":" + os.Getenv("PATH")}, filepath.Join(bin, "containerd"), "--config", cfg)
}

// crioConfig is CRI-O's configuration: everything under Dir, runc as the
// runtime, cgroupfs, NRI and metrics off.
const crioConfig = `[crio]
root = "{{Dir}}/storage"
runroot = "{{Dir}}/runroot"
storage_driver = "overlay"
log_dir = "{{Dir}}/pods"
version_file = "{{Dir}}/run/version"
version_file_persist = "{{Dir}}/lib/version"
clean_shutdown_file = "{{Dir}}/lib/clean.shutdown"

[crio.api]
listen = "{{Socket}}"
stream_address = "127.0.0.1"
stream_port = "0"

[crio.runtime]
default_runtime = "runc"
cgroup_manager = "cgroupfs"
pinns_path = "{{Peer}}/pinns"
namespaces_dir = "{{Dir}}/ns"
container_exits_dir = "{{Dir}}/run/exits"
container_attach_socket_dir = "{{Dir}}/run"
hooks_dir = ["{{Dir}}/hooks"]
cdi_spec_dirs = ["{{Dir}}/cdi"]
decryption_keys_path = "{{Dir}}/keys"

[crio.runtime.runtimes.runc]
runtime_path = "{{Runc}}"
runtime_type = "oci"
runtime_root = "{{Dir}}/runc"
monitor_path = "{{Peer}}/conmon"
monitor_cgroup = "pod"

[crio.image]
pause_image = "{{Pause}}"
signature_policy = "{{Dir}}/policy.json"
signature_policy_dir = "{{Dir}}/policies"
insecure_registries = [{{Registries}}]

[crio.network]
network_dir = "{{CNIConf}}"
plugin_dirs = ["{{CNIBin}}"]

[crio.metrics]
enable_metrics = false

[crio.nri]
enable_nri = false
`

// crioRunc is the OCI runtime CRI-O runs (-crio-runc). The benchmark's
// pods keep a PID namespace per container, as kubelet's do by default, so
// CRI-O makes no infra container for them; an infra container asks for
// oom_score_adj -998, which root without CAP_SYS_RESOURCE cannot set, and
// runc then fails: peers.sh's runc-oom, a wrapper of runc, raises it.
var crioRunc = runc

// startCRIO starts CRI-O with crioConfig, its own (empty) drop-in
// directory, and registries.conf and storage.conf of its own.
func (in *instance) startCRIO() error {
	peer := filepath.Join(in.peers, "crio-1.34.0")
	in.socket = filepath.Join(in.dir, "crio.sock")
	var quoted []string
	for _, r := range in.registry {
		quoted = append(quoted, fmt.Sprintf("%q", r))
	}
	vars := map[string]string{"Dir": in.dir, "Socket": in.socket, "Peer": peer, "Pause": in.pause, "Runc": crioRunc,
		"Registries": strings.Join(quoted, ", "), "CNIConf": in.net.ConfDir, "CNIBin": cniBin}
	files := map[string]string{
		"crio.conf":   expand(crioConfig, vars),
		"policy.json": `{"default": [{"type": "insecureAcceptAnything"}]}` + "\n",
		"registries.conf": func() string {
			var b strings.Builder
			for _, r := range in.registry {
				fmt.Fprintf(&b, "[[registry]]\nlocation = %q\ninsecure = true\n\n", r)
			}
			return b.String()
		}(),
		"storage.conf": expand("[storage]\ndriver = \"overlay\"\nrunroot = \"{{Dir}}/runroot\"\ngraphroot = \"{{Dir}}/storage\"\n", vars),
	}
	for _, d := range []string{"crio.conf.d", "hooks", "cdi", "keys", "ns", "run", "lib", "pods"} {
		if err := os.MkdirAll(filepath.Join(in.dir, d), 0o755); err != nil {
			return err
		}
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(in.dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	env := []string{
		// Its built-in crun entry, unused, looks for conmon in PATH.
		"PATH=" + peer + ":" + os.Getenv("PATH"),
		"CONTAINERS_REGISTRIES_CONF=" + filepath.Join(in.dir, "registries.conf"),
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(in.dir, "storage.conf"),
	}
	return in.startDaemon(env, filepath.Join(peer, "crio"), "--config", filepath.Join(in.dir, "crio.conf"),
		"--config-dir", filepath.Join(in.dir, "crio.conf.d"), "--log-level", "info")
}
