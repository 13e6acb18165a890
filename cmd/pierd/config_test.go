package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfig(t *testing.T) {
	c, err := loadConfig(filepath.Join(t.TempDir(), "absent.toml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != "/var/lib/pier" || c.State != "/run/pier" || c.Listen != "unix:///run/pier/pier.sock" ||
		c.Image.MaxConcurrentDownloads != 3 || c.Image.ProgressInterval.Duration != 5*time.Second ||
		c.Image.pullProgressTimeout() != 5*time.Minute || c.Image.MaxLayerUncompressedBytes != 0 {
		t.Fatalf("defaults: %+v", c)
	}
	if _, err := loadConfig(filepath.Join(t.TempDir(), "absent.toml"), true); err == nil {
		t.Fatal("a named config file that is missing must be an error")
	}
}

func TestConfigOverrides(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(path, []byte(`
root = "/srv/pier"
[image]
pinned_images = ["registry.k8s.io/pause:3.10"]
[registries."registry.k8s.io"]
mirrors = ["http://127.0.0.1:5000"]
`), 0o644)
	c, err := loadConfig(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != "/srv/pier" || c.State != "/run/pier" || c.Image.MaxConcurrentDownloads != 3 ||
		c.Registries["registry.k8s.io"].Mirrors[0] != "http://127.0.0.1:5000" || len(c.Image.PinnedImages) != 1 {
		t.Fatalf("overrides: %+v", c)
	}
	os.WriteFile(path, []byte("rooot = \"/x\"\n"), 0o644)
	if _, err := loadConfig(path, true); err == nil || !strings.Contains(err.Error(), "rooot") {
		t.Fatalf("unknown key: %v", err)
	}
	os.WriteFile(path, []byte("cgroup_driver = \"magic\"\n"), 0o644)
	if _, err := loadConfig(path, true); err == nil {
		t.Fatal("bad cgroup driver accepted")
	}
	for _, bad := range []string{"root = \"\"\n", "state = \"run/pier\"\n"} {
		os.WriteFile(path, []byte(bad), 0o644)
		if _, err := loadConfig(path, true); err == nil || !strings.Contains(err.Error(), "absolute path") || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: %v, want a refusal naming the file", bad, err)
		}
	}
	os.WriteFile(path, []byte("[metrics]\naddress = \"nowhere\"\n"), 0o644)
	if _, err := loadConfig(path, true); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("bad metrics address: %v, want an error naming the file", err)
	}
}

// TestConfigKeysAreCaseSensitive: a key in another case than its own is
// refused (the decoder took it, and which spelling won the merge was left
// to map order: FuzzConfig found it); names of handlers and registries are
// the operator's own.
func TestConfigKeysAreCaseSensitive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	for _, bad := range []string{"ROOT = \"/srv/pier\"\n", "[Image]\nmax_concurrent_downloads = 7\n", "[image]\nprogress_intervAl = \"0s\"\n",
		"[metriCs]\naddress = \"127.0.0.1:1\"\n", "[runtimes.x]\nPath = \"/bin/x\"\n", "[registries.\"a.example\"]\nMirrors = []\n"} {
		os.WriteFile(path, []byte(bad), 0o644)
		if _, err := loadConfig(path, true); err == nil || !strings.Contains(err.Error(), "lower case") {
			t.Errorf("%q: %v, want a refusal of the key's case", bad, err)
		}
	}
	os.WriteFile(path, []byte("default_runtime = \"MyRunc\"\n[runtimes.MyRunc]\npath = \"/usr/bin/runc\"\n[registries.\"Registry.Example\"]\nmirrors = []\n"), 0o644)
	c, err := loadConfig(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Runtimes["MyRunc"].Path != "/usr/bin/runc" {
		t.Errorf("handler names keep their case: %+v", c.Runtimes)
	}
}

// Metrics are off by default, and served on loopback only unless the
// operator says otherwise.
func TestMetricsConfig(t *testing.T) {
	c, err := loadConfig(filepath.Join(t.TempDir(), "absent.toml"), false)
	if err != nil {
		t.Fatal(err)
	}
	if c.Metrics.Enabled() {
		t.Fatalf("metrics on by default: %+v", c.Metrics)
	}
	for _, tc := range []struct {
		toml string
		ok   bool
	}{
		{"[metrics]\naddress = \"127.0.0.1:9091\"", true},
		{"[metrics]\naddress = \"[::1]:9091\"", true},
		{"[metrics]\naddress = \"localhost:0\"", true},
		{"[metrics]\naddress = \"0.0.0.0:9091\"", false},
		{"[metrics]\naddress = \":9091\"", false},
		{"[metrics]\naddress = \"10.0.0.1:9091\"", false},
		{"[metrics]\naddress = \"0.0.0.0:9091\"\nallow_non_loopback = true", true},
		{"[metrics]\naddress = \"127.0.0.1\"", false},
		{"[metrics]\naddress = \"127.0.0.1:http\"", false},
	} {
		path := filepath.Join(t.TempDir(), "config.toml")
		os.WriteFile(path, []byte(tc.toml), 0o644)
		_, err := loadConfig(path, true)
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.toml, err)
		}
		if err != nil && !strings.Contains(err.Error(), "[metrics]") {
			t.Errorf("%q: the error does not name the table: %v", tc.toml, err)
		}
	}
}

// TestPlatformsConfig: [platforms] emulated and a handler's platform are
// read, and a value that is no Linux platform is refused naming its key.
func TestPlatformsConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(path, []byte("[platforms]\nemulated = [\"linux/arm64\", \"auto\"]\n[runtimes.arm]\npath = \"runc\"\nplatform = \"linux/arm64\"\n"), 0o644)
	c, err := loadConfig(path, true)
	if err != nil {
		t.Fatal(err)
	}
	pc := c.platforms()
	if len(pc.Emulated) != 2 || pc.Handlers["arm"] != "linux/arm64" || pc.Default != "runc" || len(pc.Handlers) != 1 {
		t.Errorf("platform config: %+v", pc)
	}
	if s := c.summary(); !strings.Contains(s, "platform linux/arm64") || !strings.Contains(s, "emulated for every pod: linux/arm64, auto") {
		t.Errorf("summary:\n%s", s)
	}
	for bad, key := range map[string]string{
		"[platforms]\nemulated = [\"windows/amd64\"]\n":           "platforms.emulated",
		"[platforms]\nemulated = [\"arm64\"]\n":                   "platforms.emulated",
		"[runtimes.arm]\npath = \"runc\"\nplatform = \"linux\"\n": "runtimes.arm.platform",
	} {
		os.WriteFile(path, []byte(bad), 0o644)
		if _, err := loadConfig(path, true); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: %v, want a refusal naming %s", bad, err, key)
		}
	}
}
