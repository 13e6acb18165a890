package main

import (
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/metrics"
	"github.com/pier-runtime/pier/platform"
)

//go:embed default.toml
var defaultConfig string

// Config is pierd's configuration file. Its defaults are default.toml.
type Config struct {
	Root           string                          `toml:"root"`
	State          string                          `toml:"state"`
	Listen         string                          `toml:"listen"`
	LogVerbosity   int                             `toml:"log_verbosity"`
	CgroupDriver   string                          `toml:"cgroup_driver"`
	DefaultRuntime string                          `toml:"default_runtime"`
	ShimBinary     string                          `toml:"shim_binary"`
	Runtimes       map[string]RuntimeConfig        `toml:"runtimes"`
	CNI            CNIConfig                       `toml:"cni"`
	Streaming      StreamingConfig                 `toml:"streaming"`
	Image          ImageConfig                     `toml:"image"`
	Security       SecurityConfig                  `toml:"security"`
	Registries     map[string]image.RegistryConfig `toml:"registries"`
	Metrics        metrics.Config                  `toml:"metrics"`
	Platforms      PlatformsConfig                 `toml:"platforms"`
	NRI            NRIConfig                       `toml:"nri"`
	CDI            CDIConfig                       `toml:"cdi"`

	// origin names, by key path, the file (or flag) that set each key
	// (mergeConfig); files lists the files read, in order.
	origin map[string]string
	files  []string
	// path and named are loadConfig's arguments, flags the command-line
	// flags given (noteFlags), for reloads.
	path  string
	named bool
	flags map[string]bool
}

// RuntimeConfig is a [runtimes.<handler>] table.
type RuntimeConfig struct {
	Path               string   `toml:"path"`
	AllowedAnnotations []string `toml:"allowed_annotations"`
	// Platform, if set, is the one platform this handler's pods pull and
	// run ("linux/arm64"), even where the image has a native variant.
	Platform string `toml:"platform"`
}

// PlatformsConfig is the [platforms] table.
type PlatformsConfig struct {
	// Emulated lists the foreign platforms every pod may run through a
	// binfmt_misc emulator, or ["auto"] for all that have a usable one.
	Emulated []string `toml:"emulated"`
}

// platforms is the platform.Config of c.
func (c *Config) platforms() platform.Config {
	pc := platform.Config{Emulated: c.Platforms.Emulated, Handlers: map[string]string{}, Default: c.DefaultRuntime}
	for name, rc := range c.Runtimes {
		if rc.Platform != "" {
			pc.Handlers[name] = rc.Platform
		}
	}
	return pc
}

// NRIConfig is the [nri] table: NRI plugins (package nri).
type NRIConfig struct {
	Enable                    bool     `toml:"enable"`
	SocketPath                string   `toml:"socket_path"`
	PluginPath                string   `toml:"plugin_path"`
	PluginConfigPath          string   `toml:"plugin_config_path"`
	PluginRegistrationTimeout duration `toml:"plugin_registration_timeout"`
	PluginRequestTimeout      duration `toml:"plugin_request_timeout"`
}

// CDIConfig is the [cdi] table: CDI device specs (package cdi).
type CDIConfig struct {
	SpecDirs []string `toml:"spec_dirs"`
}

// SecurityConfig is the [security] table.
type SecurityConfig struct {
	SeccompDefault string `toml:"seccomp_default"`
}

// StreamingConfig is the [streaming] table.
type StreamingConfig struct {
	Address string `toml:"address"`
}

// CNIConfig is the [cni] table.
type CNIConfig struct {
	ConfDir    string   `toml:"conf_dir"`
	PluginDirs []string `toml:"plugin_dirs"`
}

// ImageConfig is the [image] table.
type ImageConfig struct {
	MaxConcurrentDownloads    int      `toml:"max_concurrent_downloads"`
	ProgressInterval          duration `toml:"progress_interval"`
	PullProgressTimeout       duration `toml:"pull_progress_timeout"`
	MaxLayerUncompressedBytes int64    `toml:"max_layer_uncompressed_bytes"`
	PinnedImages              []string `toml:"pinned_images"`
}

type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) (err error) {
	d.Duration, err = time.ParseDuration(string(b))
	return err
}

// loadConfig reads the defaults, then path on top of them, then the
// drop-ins of its config.d directory (mergeConfig). A missing file is fine
// unless the user named it; a missing config.d is fine.
func loadConfig(path string, named bool) (*Config, error) {
	files := []string{path}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && !named {
		files = nil
	} else if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	dropIns, err := dropInFiles(filepath.Join(filepath.Dir(path), "config.d"))
	if err != nil {
		return nil, err
	}
	c, err := mergeConfig(append(files, dropIns...))
	if err != nil {
		return nil, err
	}
	c.path, c.named = path, named
	return c, c.validate()
}

// validate checks the values of c; an error names the key and the file
// that set it.
func (c *Config) validate() error {
	switch c.CgroupDriver {
	case "", "systemd", "cgroupfs":
	default:
		return c.keyError(toml.Key{"cgroup_driver"}, "%q: want \"systemd\", \"cgroupfs\" or \"\"", c.CgroupDriver)
	}
	for _, d := range []struct {
		key, path string
	}{{"root", c.Root}, {"state", c.State}} {
		if !filepath.IsAbs(d.path) {
			return c.keyError(toml.Key{d.key}, "%q: want an absolute path", d.path)
		}
	}
	if !strings.HasPrefix(c.Listen, "unix://") {
		return c.keyError(toml.Key{"listen"}, "%q: want unix:///path/to.sock", c.Listen)
	}
	if _, ok := c.Runtimes[c.DefaultRuntime]; !ok {
		return c.keyError(toml.Key{"default_runtime"}, "%q has no [runtimes.%s] table", c.DefaultRuntime, toml.Key{c.DefaultRuntime})
	}
	for _, name := range slices.Sorted(maps.Keys(c.Runtimes)) {
		if c.Runtimes[name].Path == "" {
			return c.keyError(toml.Key{"runtimes", name, "path"}, "runtime handler %s needs a path", name)
		}
		if p := c.Runtimes[name].Platform; p != "" {
			if _, err := platform.Parse(p); err != nil {
				return c.keyError(toml.Key{"runtimes", name, "platform"}, "%v", err)
			}
		}
	}
	for _, e := range c.Platforms.Emulated {
		if err := platform.CheckConfig(platform.Config{Emulated: []string{e}}); err != nil {
			return c.keyError(toml.Key{"platforms", "emulated"}, "%v", err)
		}
	}
	if c.Image.MaxConcurrentDownloads < 1 {
		return c.keyError(toml.Key{"image", "max_concurrent_downloads"}, "%d: must be at least 1", c.Image.MaxConcurrentDownloads)
	}
	if c.Image.PullProgressTimeout.Duration < 0 {
		return c.keyError(toml.Key{"image", "pull_progress_timeout"}, "%v: must not be negative (\"0s\" disables it)", c.Image.PullProgressTimeout.Duration)
	}
	if c.Image.MaxLayerUncompressedBytes < 0 {
		return c.keyError(toml.Key{"image", "max_layer_uncompressed_bytes"}, "%d: must not be negative (0 bounds layers by free space only)", c.Image.MaxLayerUncompressedBytes)
	}
	switch c.Security.SeccompDefault {
	case "", "unconfined", "runtime/default":
	default:
		return c.keyError(toml.Key{"security", "seccomp_default"}, "%q: want \"unconfined\" or \"runtime/default\"", c.Security.SeccompDefault)
	}
	if _, _, err := net.SplitHostPort(c.Streaming.Address); err != nil {
		return c.keyError(toml.Key{"streaming", "address"}, "%q: want host:port", c.Streaming.Address)
	}
	for _, host := range slices.Sorted(maps.Keys(c.Registries)) {
		if err := image.CheckConfig(map[string]image.RegistryConfig{host: c.Registries[host]}, nil); err != nil {
			return c.keyError(toml.Key{"registries", host, "mirrors"}, "%v", err)
		}
	}
	for i, ref := range c.Image.PinnedImages {
		if err := image.CheckConfig(nil, []string{ref}); err != nil {
			return c.keyError(toml.Key{"image", "pinned_images"}, "entry %d: %v", i, err)
		}
	}
	if c.NRI.Enable {
		if c.NRI.SocketPath != "" && !filepath.IsAbs(c.NRI.SocketPath) {
			return c.keyError(toml.Key{"nri", "socket_path"}, "%q: want an absolute path, or \"\" to accept no plugin connections", c.NRI.SocketPath)
		}
		for _, k := range []struct {
			key string
			d   time.Duration
		}{{"plugin_registration_timeout", c.NRI.PluginRegistrationTimeout.Duration}, {"plugin_request_timeout", c.NRI.PluginRequestTimeout.Duration}} {
			if k.d <= 0 {
				return c.keyError(toml.Key{"nri", k.key}, "%v: must be positive", k.d)
			}
		}
	}
	for _, d := range c.CDI.SpecDirs {
		if !filepath.IsAbs(d) {
			return c.keyError(toml.Key{"cdi", "spec_dirs"}, "%q: want absolute paths", d)
		}
	}
	if err := c.Metrics.Validate(); err != nil {
		return fmt.Errorf("%s: %w", c.from(toml.Key{"metrics", "address"}), err)
	}
	return nil
}

// pullProgressTimeout is the image.Options value for the configured
// timeout: "0s" disables it.
func (c ImageConfig) pullProgressTimeout() time.Duration {
	if c.PullProgressTimeout.Duration == 0 {
		return -1
	}
	return c.PullProgressTimeout.Duration
}
