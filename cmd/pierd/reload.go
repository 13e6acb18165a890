package main

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/cri"
	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/oci"
	"github.com/pier-runtime/pier/platform"
)

// configCheck is `pierd config check [--config path]`: it loads the
// configuration with its drop-ins as pierd would and says what is wrong, or
// what it found.
func configCheck(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("config check: unexpected %q", strings.Join(fs.Args(), " "))
	}
	cfg, err := loadConfig(fs.Lookup("config").Value.String(), flagGiven(fs, "config"))
	if err != nil {
		return fmt.Errorf("config check: %w", err)
	}
	fmt.Print(cfg.summary())
	return nil
}

// summary says which files make the configuration and what it offers.
func (c *Config) summary() string {
	var b strings.Builder
	files := c.files
	if len(files) == 0 {
		files = []string{"no file: built-in defaults"}
	}
	fmt.Fprintf(&b, "config OK: %s\n", strings.Join(files, ", "))
	var handlers []string
	for _, name := range slices.Sorted(maps.Keys(c.Runtimes)) {
		h := name + " (" + c.Runtimes[name].Path
		if _, err := exec.LookPath(c.Runtimes[name].Path); err != nil {
			h += ", not found: not offered"
		}
		if p := c.Runtimes[name].Platform; p != "" {
			h += ", platform " + p
		}
		if name == c.DefaultRuntime {
			h += ", default"
		}
		handlers = append(handlers, h+")")
	}
	fmt.Fprintf(&b, "runtime handlers: %s\n", strings.Join(handlers, ", "))
	emulated := "none"
	if len(c.Platforms.Emulated) > 0 {
		emulated = strings.Join(c.Platforms.Emulated, ", ")
	}
	fmt.Fprintf(&b, "platforms emulated for every pod: %s\n", emulated)
	fmt.Fprintf(&b, "registries configured: %d; pinned images: %d\n", len(c.Registries), len(c.Image.PinnedImages))
	return b.String()
}

// flagGiven reports whether the command line set flag name.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// noteFlags records the flags given, some of which override the
// configuration (override; they keep their value across reloads), and
// applies log_verbosity unless -v is given.
func noteFlags(fs *flag.FlagSet, c *Config) {
	c.flags = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { c.flags[f.Name] = true })
	if !c.flags["v"] {
		setVerbosity(c.LogVerbosity)
	}
}

// override sets the keys that flags of the same name override (root,
// state, listen), where such a flag is given (c.flags) with a value, to
// that value (in values), and notes where they come from.
func (c *Config) override(values *Config) {
	for key, f := range map[string][2]*string{"root": {&c.Root, &values.Root}, "state": {&c.State, &values.State}, "listen": {&c.Listen, &values.Listen}} {
		if c.flags[key] && *f[1] != "" {
			*f[0] = *f[1]
			c.origin[key] = "--" + key + " flag"
		}
	}
}

// setVerbosity sets klog's -v.
func setVerbosity(n int) {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	if err := fs.Set("v", strconv.Itoa(n)); err != nil {
		klog.ErrorS(err, "Cannot set the log verbosity")
	}
}

// reloader applies a changed configuration on SIGHUP.
type reloader struct {
	started, running *Config
	systemdCgroup    bool
	images           interface {
		Reconfigure(map[string]image.RegistryConfig, []string) error
	}
	containers interface{ SetRuntimes(map[string]*oci.Runtime) }
	runtime    interface{ SetHandlers([]cri.Handler, string) }
	handlers   []cri.Handler
	platforms  *platform.Policy
}

// reloadOnSIGHUP reloads the configuration at each SIGHUP, for as long as
// pierd runs.
func reloadOnSIGHUP(cfg *Config, systemdCgroup bool, images *image.Store, containers *container.Manager, runtime *cri.RuntimeService, handlers []cri.Handler, platforms *platform.Policy) {
	r := &reloader{started: cfg, running: cfg, systemdCgroup: systemdCgroup, images: images, containers: containers, runtime: runtime, handlers: handlers, platforms: platforms}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			r.reload()
		}
	}()
}

// restartKeys are the keys whose change takes effect only when pierd
// restarts, with their values.
func restartKeys(c *Config) map[string]any {
	return map[string]any{
		"root": c.Root, "state": c.State, "listen": c.Listen, "cgroup_driver": c.CgroupDriver,
		"shim_binary": c.ShimBinary, "cni.conf_dir": c.CNI.ConfDir, "cni.plugin_dirs": c.CNI.PluginDirs,
		"streaming.address": c.Streaming.Address, "security.seccomp_default": c.Security.SeccompDefault,
		"image.max_concurrent_downloads": c.Image.MaxConcurrentDownloads, "image.progress_interval": c.Image.ProgressInterval.String(),
		"image.pull_progress_timeout": c.Image.PullProgressTimeout.String(), "image.max_layer_uncompressed_bytes": c.Image.MaxLayerUncompressedBytes,
		"metrics.address": c.Metrics.Address, "metrics.allow_non_loopback": c.Metrics.AllowNonLoopback,
		"nri.enable": c.NRI.Enable, "nri.socket_path": c.NRI.SocketPath, "nri.plugin_path": c.NRI.PluginPath,
		"nri.plugin_config_path": c.NRI.PluginConfigPath, "nri.plugin_registration_timeout": c.NRI.PluginRegistrationTimeout.String(),
		"nri.plugin_request_timeout": c.NRI.PluginRequestTimeout.String(), "cdi.spec_dirs": c.CDI.SpecDirs,
	}
}

// reload loads the configuration and applies what can change while pierd
// runs; a configuration that does not load or validate changes nothing.
// It returns the keys applied and those that need a restart.
func (r *reloader) reload() (applied, restart []string, err error) {
	klog.InfoS("SIGHUP: reloading the configuration", "config", r.started.path)
	cfg, err := r.load()
	if err != nil {
		klog.ErrorS(err, "Configuration reload failed: nothing changed, the running configuration stays in force")
		return nil, nil, err
	}
	applied = r.apply(cfg)
	old, now := restartKeys(r.started), restartKeys(cfg)
	for _, k := range slices.Sorted(maps.Keys(now)) {
		if !reflect.DeepEqual(old[k], now[k]) {
			restart = append(restart, k)
			klog.InfoS("Configuration key changed; it takes effect when pierd restarts", "key", k, "running", old[k], "configured", now[k], "file", cfg.from(strings.Split(k, ".")))
		}
	}
	klog.InfoS("Configuration reloaded", "files", cfg.files, "applied", applied, "needsRestart", restart)
	return applied, restart, nil
}

// load reads the configuration as at start-up, the flags' overrides kept.
func (r *reloader) load() (*Config, error) {
	cfg, err := loadConfig(r.started.path, r.started.named)
	if err != nil {
		return nil, err
	}
	cfg.path, cfg.named, cfg.flags = r.started.path, r.started.named, r.started.flags
	cfg.override(r.started)
	return cfg, cfg.validate()
}

// apply makes the running configuration cfg where it can change, and says
// which keys changed.
func (r *reloader) apply(cfg *Config) []string {
	var applied []string
	old := r.running
	if !reflect.DeepEqual(old.Registries, cfg.Registries) || !slices.Equal(old.Image.PinnedImages, cfg.Image.PinnedImages) {
		// validate checked both: this does not fail.
		if err := r.images.Reconfigure(cfg.Registries, cfg.Image.PinnedImages); err != nil {
			klog.ErrorS(err, "Registries and pinned images not reloaded")
			cfg.Registries, cfg.Image.PinnedImages = old.Registries, old.Image.PinnedImages
		} else {
			if !reflect.DeepEqual(old.Registries, cfg.Registries) {
				applied = append(applied, "registries")
				klog.InfoS("Registries reloaded: they apply to pulls that start from now on", "registries", slices.Sorted(maps.Keys(cfg.Registries)))
			}
			if !slices.Equal(old.Image.PinnedImages, cfg.Image.PinnedImages) {
				applied = append(applied, "image.pinned_images")
				klog.InfoS("Pinned images reloaded", "pinned", cfg.Image.PinnedImages)
			}
		}
	}
	if old.LogVerbosity != cfg.LogVerbosity {
		setVerbosity(cfg.LogVerbosity)
		applied = append(applied, "log_verbosity")
		klog.InfoS("Log verbosity changed", "from", old.LogVerbosity, "to", cfg.LogVerbosity)
	}
	changed := !reflect.DeepEqual(old.Runtimes, cfg.Runtimes) || old.DefaultRuntime != cfg.DefaultRuntime
	keep := map[string]cri.Handler{}
	for _, h := range r.handlers {
		if oc, ok := old.Runtimes[h.Name]; ok && h.Err == nil && reflect.DeepEqual(oc, cfg.Runtimes[h.Name]) {
			keep[h.Name] = h // unchanged and usable; the others are probed (again)
		}
	}
	if changed || len(keep) < len(cfg.Runtimes) {
		handlers, runtimes := probeSome(cfg, r.systemdCgroup, keep)
		usable := func(hs []cri.Handler) (names []string) {
			for _, h := range hs {
				if h.Err == nil {
					names = append(names, h.Name)
				}
			}
			return names
		}
		if changed || !slices.Equal(usable(handlers), usable(r.handlers)) {
			r.containers.SetRuntimes(runtimes)
			r.runtime.SetHandlers(handlers, cfg.DefaultRuntime)
			r.handlers = handlers
			applied = append(applied, "runtimes")
			klog.InfoS("Runtime handlers reloaded: they apply to new containers; existing ones keep the runtime they were created with", "usable", usable(handlers), "default", cfg.DefaultRuntime)
		}
		for _, name := range slices.Sorted(maps.Keys(old.Runtimes)) {
			if _, ok := cfg.Runtimes[name]; !ok {
				klog.InfoS("Runtime handler removed: no new containers use it; its containers keep running", "handler", name)
			}
		}
		for _, name := range slices.Sorted(maps.Keys(cfg.Runtimes)) {
			if oc, ok := old.Runtimes[name]; ok && !reflect.DeepEqual(oc, cfg.Runtimes[name]) {
				klog.InfoS("Runtime handler changed: new containers get the new settings", "handler", name, "path", cfg.Runtimes[name].Path)
			}
		}
		if old.DefaultRuntime != cfg.DefaultRuntime {
			klog.InfoS("Default runtime handler changed", "from", old.DefaultRuntime, "to", cfg.DefaultRuntime)
		}
	}
	if r.platforms != nil {
		if !reflect.DeepEqual(old.platforms(), cfg.platforms()) {
			// validate checked it: this does not fail.
			if err := r.platforms.Reconfigure(cfg.platforms()); err != nil {
				klog.ErrorS(err, "Platforms not reloaded")
			} else {
				applied = append(applied, "platforms")
			}
		}
		logPlatforms(r.platforms) // the registrations may have changed too
	}
	r.running = cfg
	return applied
}
