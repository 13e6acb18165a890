package main

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pier-runtime/pier/cri"
	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/oci"
	"github.com/pier-runtime/pier/platform"
)

// configDir writes files (name -> content; names with a slash go below
// the directory) and returns the main file's path.
func configDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "config.toml")
}

func TestDropInsMergeInNameOrder(t *testing.T) {
	path := configDir(t, map[string]string{
		"config.toml": `
root = "/srv/pier"
[image]
pinned_images = ["a:1", "b:1"]
[registries."docker.io"]
mirrors = ["http://main:5000"]
`,
		// 20 is read after 10 (name order, not creation order).
		"config.d/20-late.toml": `
root = "/srv/late"
[image]
pinned_images = ["c:1"]
`,
		"config.d/10-early.toml": `
root = "/srv/early"
state = "/run/early"
[runtimes.runc]
allowed_annotations = ["run.oci.*"]
[registries."docker.io"]
mirrors_only = true
[registries."quay.io"]
mirrors = ["https://q:443"]
[cni]
plugin_dirs = ["/x"]
`,
		"config.d/.30-hidden.toml": `root = "/hidden"`,
		"config.d/30-notes.txt":    `root = "/txt"`,
	})
	c, err := loadConfig(path, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.Root != "/srv/late" || c.State != "/run/early" {
		t.Errorf("later file wins: root %q state %q", c.Root, c.State)
	}
	// Tables merge key by key: runc keeps its path.
	if r := c.Runtimes["runc"]; r.Path != "runc" || !slices.Equal(r.AllowedAnnotations, []string{"run.oci.*"}) {
		t.Errorf("runtimes.runc: %+v", r)
	}
	if c.Runtimes["crun"].Path != "crun" {
		t.Errorf("runtimes.crun lost: %+v", c.Runtimes)
	}
	if d := c.Registries["docker.io"]; !d.MirrorsOnly || !slices.Equal(d.Mirrors, []string{"http://main:5000"}) {
		t.Errorf("registries.docker.io: %+v", d)
	}
	if len(c.Registries["quay.io"].Mirrors) != 1 {
		t.Errorf("registries.quay.io: %+v", c.Registries)
	}
	// Arrays are replaced, not appended to.
	if !slices.Equal(c.Image.PinnedImages, []string{"c:1"}) || !slices.Equal(c.CNI.PluginDirs, []string{"/x"}) {
		t.Errorf("arrays: pinned %v, plugin_dirs %v", c.Image.PinnedImages, c.CNI.PluginDirs)
	}
	if c.Image.MaxConcurrentDownloads != 3 || c.Listen != "unix:///run/pier/pier.sock" {
		t.Errorf("defaults lost: %+v", c)
	}
	if want := []string{path, filepath.Join(filepath.Dir(path), "config.d/10-early.toml"), filepath.Join(filepath.Dir(path), "config.d/20-late.toml")}; !slices.Equal(c.files, want) {
		t.Errorf("files %v, want %v", c.files, want)
	}

	// No main file, no config.d: the defaults. Drop-ins without a main file
	// still apply.
	c, err = loadConfig(filepath.Join(t.TempDir(), "config.toml"), false)
	if err != nil || c.Root != "/var/lib/pier" {
		t.Fatalf("defaults: %v %+v", err, c)
	}
	path = configDir(t, map[string]string{"config.d/a.toml": `root = "/only/dropin"`})
	if c, err = loadConfig(path, false); err != nil || c.Root != "/only/dropin" {
		t.Fatalf("drop-in without main file: %v %+v", err, c)
	}
}

func TestConfigErrorsNameFileAndKey(t *testing.T) {
	for _, tc := range []struct {
		dropIn string
		want   []string
	}{
		{"[image]\npinned_imagez = []\n", []string{"50-bad.toml", "unknown key image.pinned_imagez"}},
		{"[registries.\"docker.io\"]\nmirror = [\"x\"]\n", []string{"50-bad.toml", `registries."docker.io".mirror`}},
		{"[image]\nmax_concurrent_downloads = \"many\"\n", []string{"50-bad.toml", "image.max_concurrent_downloads"}},
		{"[image]\nmax_concurrent_downloads = 0\n", []string{"50-bad.toml: image.max_concurrent_downloads: 0: must be at least 1"}},
		{"[image]\npull_progress_timeout = \"-1s\"\n", []string{"50-bad.toml: image.pull_progress_timeout: -1s: must not be negative"}},
		{"[image]\nmax_layer_uncompressed_bytes = -1\n", []string{"50-bad.toml: image.max_layer_uncompressed_bytes: -1: must not be negative"}},
		{"cgroup_driver = \"magic\"\n", []string{"50-bad.toml: cgroup_driver:"}},
		{"default_runtime = \"kata\"\n", []string{"50-bad.toml: default_runtime:", "no [runtimes.kata] table"}},
		{"[runtimes.kata]\nallowed_annotations = []\n", []string{"50-bad.toml: runtimes.kata.path:"}},
		{"[registries.\"q.io\"]\nmirrors = [\"ftp://m\"]\n", []string{`50-bad.toml: registries."q.io".mirrors:`, "ftp://m"}},
		{"[image]\npinned_images = [\"UPPER:case\"]\n", []string{"50-bad.toml: image.pinned_images: entry 0"}},
		{"[security]\nseccomp_default = \"strict\"\n", []string{"50-bad.toml: security.seccomp_default:"}},
		{"root = \n", []string{"50-bad.toml: toml:"}},
	} {
		path := configDir(t, map[string]string{
			"config.toml":          "root = \"/srv/pier\"\n",
			"config.d/10-ok.toml":  "state = \"/run/x\"\n",
			"config.d/50-bad.toml": tc.dropIn,
		})
		_, err := loadConfig(path, true)
		if err == nil {
			t.Errorf("%q: accepted", tc.dropIn)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%q: error %q does not say %q", tc.dropIn, err, w)
			}
		}
	}
	// A value left at its default that fails with another file's change
	// names that file: listen set by the main file.
	path := configDir(t, map[string]string{"config.toml": "listen = \"tcp://x\"\n"})
	if _, err := loadConfig(path, true); err == nil || !strings.Contains(err.Error(), "config.toml: listen:") {
		t.Errorf("listen: %v", err)
	}
}

func TestConfigCheck(t *testing.T) {
	path := configDir(t, map[string]string{"config.toml": "root = \"/srv\"\n", "config.d/a.toml": "[image]\npinned_images = [\"busybox\"]\n"})
	fs := flag.NewFlagSet("pierd", flag.ContinueOnError)
	fs.String("config", "/etc/pier/config.toml", "")
	if err := configCheck(fs, []string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(filepath.Dir(path), "config.d/b.toml"), []byte("[streaming]\nadress = \"x\"\n"), 0o644)
	fs = flag.NewFlagSet("pierd", flag.ContinueOnError)
	fs.String("config", "/etc/pier/config.toml", "")
	err := configCheck(fs, []string{"--config", path})
	if err == nil || !strings.Contains(err.Error(), "b.toml: unknown key streaming.adress") {
		t.Fatalf("config check: %v", err)
	}
}

type fakeImages struct {
	calls      int
	registries map[string]image.RegistryConfig
	pinned     []string
}

func (f *fakeImages) Reconfigure(r map[string]image.RegistryConfig, p []string) error {
	f.calls++
	f.registries, f.pinned = r, p
	return nil
}

type fakeContainers struct{ runtimes map[string]*oci.Runtime }

func (f *fakeContainers) SetRuntimes(r map[string]*oci.Runtime) { f.runtimes = r }

type fakeRuntime struct {
	handlers []cri.Handler
	def      string
}

func (f *fakeRuntime) SetHandlers(h []cri.Handler, def string) { f.handlers, f.def = h, def }

func TestReloadAppliesWhatIsSafe(t *testing.T) {
	state := t.TempDir() // the probes' work directories
	path := configDir(t, map[string]string{"config.toml": "root = \"/srv/pier\"\nstate = \"" + state + "\"\n[runtimes.runc]\npath = \"/nonexistent/runc\"\n[runtimes.crun]\npath = \"/nonexistent/crun\"\n"})
	dropIn := filepath.Join(filepath.Dir(path), "config.d", "50-ops.toml")
	os.MkdirAll(filepath.Dir(dropIn), 0o755)
	started, err := loadConfig(path, true)
	if err != nil {
		t.Fatal(err)
	}
	started.flags = map[string]bool{"listen": true}
	started.Listen = "unix:///tmp/flag.sock"
	runc := cri.Handler{Name: "runc", Runtime: &oci.Runtime{Name: "runc", Path: "/nonexistent/runc"}}
	images, containers, runtime := &fakeImages{}, &fakeContainers{}, &fakeRuntime{}
	r := &reloader{started: started, running: started, images: images, containers: containers, runtime: runtime,
		handlers: []cri.Handler{runc, {Name: "crun", Err: os.ErrNotExist}}}

	// Nothing changed: nothing applied, nothing to restart (the --listen
	// flag still wins over the file); crun, unusable, is probed again, in
	// vain.
	applied, restart, err := r.reload()
	if err != nil || len(applied) != 0 || len(restart) != 0 || images.calls != 0 || runtime.handlers != nil {
		t.Fatalf("unchanged: applied %v restart %v err %v calls %d", applied, restart, err, images.calls)
	}

	os.WriteFile(dropIn, []byte(`
root = "/srv/other"
log_verbosity = 3
[image]
pinned_images = ["registry.k8s.io/pause:3.10"]
[registries."docker.io"]
mirrors = ["http://127.0.0.1:5000"]
[streaming]
address = "127.0.0.1:10010"
`), 0o644)
	t.Cleanup(func() { setVerbosity(0) })
	applied, restart, err = r.reload()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"registries", "image.pinned_images", "log_verbosity"}; !slices.Equal(applied, want) {
		t.Errorf("applied %v, want %v", applied, want)
	}
	if want := []string{"root", "streaming.address"}; !slices.Equal(restart, want) {
		t.Errorf("needs restart %v, want %v", restart, want)
	}
	if images.calls != 1 || images.registries["docker.io"].Mirrors[0] != "http://127.0.0.1:5000" || images.pinned[0] != "registry.k8s.io/pause:3.10" {
		t.Errorf("image store: %+v", images)
	}
	if containers.runtimes != nil || runtime.handlers != nil {
		t.Error("runtime handlers replaced though unchanged")
	}
	if r.running.Listen != "unix:///tmp/flag.sock" {
		t.Errorf("the --listen flag lost: %q", r.running.Listen)
	}

	// A bad drop-in changes nothing and says where.
	os.WriteFile(filepath.Join(filepath.Dir(dropIn), "60-bad.toml"), []byte("[image]\npinned_images = [\"x\"]\n[registries.\"docker.io\"]\nmirors = []\n"), 0o644)
	running := r.running
	_, _, err = r.reload()
	if err == nil || !strings.Contains(err.Error(), `60-bad.toml: unknown key registries."docker.io".mirors`) {
		t.Fatalf("bad drop-in: %v", err)
	}
	if r.running != running || images.calls != 1 {
		t.Error("a failed reload changed the running configuration")
	}
	os.Remove(filepath.Join(filepath.Dir(dropIn), "60-bad.toml"))

	// Runtime handlers: runc unchanged is kept as it is (not probed
	// again), a new handler is probed (and fails here), the default moves.
	os.WriteFile(dropIn, []byte("default_runtime = \"kata\"\n[runtimes.kata]\npath = \"/nonexistent/kata\"\n"), 0o644)
	applied, _, err = r.reload()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(applied, "runtimes") || runtime.def != "kata" {
		t.Fatalf("applied %v, default %q", applied, runtime.def)
	}
	got := map[string]cri.Handler{}
	for _, h := range runtime.handlers {
		got[h.Name] = h
	}
	if got["runc"].Runtime != runc.Runtime || got["kata"].Err == nil || got["crun"].Err == nil || len(got) != 3 {
		t.Errorf("handlers: %+v", runtime.handlers)
	}
	if len(containers.runtimes) != 1 || containers.runtimes["runc"] != runc.Runtime {
		t.Errorf("runtimes for new containers: %v", containers.runtimes)
	}
	// The registries and pins the drop-in no longer sets go back.
	if images.calls != 2 || len(images.pinned) != 0 {
		t.Errorf("image store: %+v", images)
	}
}

// TestReloadPlatforms: SIGHUP applies [platforms] and a handler's
// platform to the policy; a bad value changes nothing.
func TestReloadPlatforms(t *testing.T) {
	state := t.TempDir()
	path := configDir(t, map[string]string{"config.toml": "state = \"" + state + "\"\n[runtimes.runc]\npath = \"/nonexistent/runc\"\n[runtimes.crun]\npath = \"/nonexistent/crun\"\n"})
	started, err := loadConfig(path, true)
	if err != nil {
		t.Fatal(err)
	}
	policy, err := platform.New(started.platforms(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	r := &reloader{started: started, running: started, images: &fakeImages{}, containers: &fakeContainers{}, runtime: &fakeRuntime{}, platforms: policy}
	os.WriteFile(path, []byte("state = \""+state+"\"\n[platforms]\nemulated = [\"linux/riscv64\"]\n[runtimes.runc]\npath = \"/nonexistent/runc\"\nplatform = \"linux/arm64\"\n"), 0o644)
	applied, _, err := r.reload()
	if err != nil || !slices.Contains(applied, "platforms") {
		t.Fatalf("applied %v, err %v", applied, err)
	}
	if w := policy.Want("runc"); !w.Fixed {
		t.Errorf("runc's platform not applied: %+v", w)
	}
	if got := policy.Info()["emulatedConfigured"]; !slices.Equal(got.([]string), []string{"linux/riscv64"}) {
		t.Errorf("emulated: %v", got)
	}
	os.WriteFile(path, []byte("state = \""+state+"\"\n[platforms]\nemulated = [\"plan9/arm\"]\n"), 0o644)
	if _, _, err := r.reload(); err == nil {
		t.Fatal("a bad platform reloaded")
	}
	if w := policy.Want("runc"); !w.Fixed {
		t.Error("a failed reload changed the policy")
	}
}
