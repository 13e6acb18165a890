package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzConfig loads the configuration as pierd does (loadConfig: the
// built-in defaults, config.toml, then config.d's drop-ins, validated)
// with a fuzzed config.toml and drop-in. It must not panic; an error must
// name the file or the table at fault; a config it accepts must take the
// drop-in's top-level values over the main file's and the defaults, and
// load the same again.
func FuzzConfig(f *testing.F) {
	f.Add("", "")
	f.Add("root = \"/srv/pier\"\nlog_verbosity = 2\n[image]\npinned_images = [\"registry.k8s.io/pause:3.10\"]\nprogress_interval = \"10s\"\n",
		"root = \"/data/pier\"\n[image]\nmax_concurrent_downloads = 5\n")
	f.Add("[runtimes.crun]\npath = \"/usr/bin/crun\"\nallowed_annotations = [\"run.oci.*\"]\n", "default_runtime = \"crun\"\n")
	f.Add("[registries.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\n", "[registries.\"docker.io\"]\nmirrors = [\"ftp://x\"]\n")
	f.Add("[metrics]\naddress = \"127.0.0.1:9091\"\n", "[metrics]\naddress = \"0.0.0.0:9091\"\nallow_non_loopback = true\n")
	f.Add("[streaming]\naddress = \"127.0.0.1:0\"\n[cni]\nconf_dir = \"/etc/cni/net.d\"\nplugin_dirs = [\"/opt/cni/bin\"]\n", "[security]\nseccomp_default = \"runtime/default\"\n")
	f.Add("cgroup_driver = \"systemd\"\n", "cgroup_driver = \"magic\"\n")
	f.Add("rooot = 1\n", "[image]\nprogress_interval = \"soon\"\n")
	// Keys in another case, which the merge once kept apart (either won).
	f.Add("root=\"\"\nlog_verBositY=0\n[imAge]\npinned_imAges=[]\nprogress_intervAl=\"0\"", "")
	f.Add("[metriCs]\nAddress= \"00000000000000\" ", "")
	f.Add("listen = \"unix:///run/x.sock\"\n[runtimes.runc]\npath = \"\"\n", "[runtimes]\nrunc = 3\n")
	f.Fuzz(func(t *testing.T, main, dropIn string) {
		dir := t.TempDir()
		path := filepath.Join(dir, "config.toml")
		dropInPath := filepath.Join(dir, "config.d", "10-fuzz.toml")
		if err := os.Mkdir(filepath.Dir(dropInPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(main), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dropInPath, []byte(dropIn), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := loadConfig(path, true)
		if err != nil {
			msg := err.Error()
			if !strings.Contains(msg, path) && !strings.Contains(msg, dropInPath) && !strings.Contains(msg, builtIn) &&
				!strings.HasPrefix(msg, "[") {
				t.Fatalf("the error names no file nor table: %v", err)
			}
			return
		}
		// The drop-in's top-level values win.
		var top map[string]any
		if _, err := toml.Decode(dropIn, &top); err != nil {
			t.Fatalf("accepted a drop-in that is not TOML: %v", err)
		}
		for key, got := range map[string]any{"root": c.Root, "state": c.State, "listen": c.Listen,
			"cgroup_driver": c.CgroupDriver, "default_runtime": c.DefaultRuntime, "shim_binary": c.ShimBinary} {
			if want, ok := top[key]; ok && want != got {
				t.Fatalf("%s: the drop-in says %q, the config has %q", key, want, got)
			}
		}
		if want, ok := top["log_verbosity"]; ok && want != int64(c.LogVerbosity) {
			t.Fatalf("log_verbosity: the drop-in says %v, the config has %d", want, c.LogVerbosity)
		}
		if c.from(toml.Key{"root"}) != builtIn && c.from(toml.Key{"root"}) != path && c.from(toml.Key{"root"}) != dropInPath {
			t.Fatalf("root comes from %q", c.from(toml.Key{"root"}))
		}
		again, err := loadConfig(path, true)
		if err != nil {
			t.Fatalf("accepted once, refused the second time: %v", err)
		}
		if again.Root != c.Root || again.Listen != c.Listen || again.Image.ProgressInterval != c.Image.ProgressInterval ||
			len(again.Runtimes) != len(c.Runtimes) || len(again.Registries) != len(c.Registries) {
			t.Fatalf("loaded twice, the config differs:\n%+v\n%+v", c, again)
		}
	})
}
