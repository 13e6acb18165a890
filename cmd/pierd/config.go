package main

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/metrics"
)

//go:embed default.toml
var defaultConfig string

// Config is pierd's configuration file. Its defaults are default.toml.
type Config struct {
	Root           string                          `toml:"root"`
	State          string                          `toml:"state"`
	Listen         string                          `toml:"listen"`
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
}

// RuntimeConfig is a [runtimes.<handler>] table.
type RuntimeConfig struct {
	Path               string   `toml:"path"`
	AllowedAnnotations []string `toml:"allowed_annotations"`
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
	MaxConcurrentDownloads int      `toml:"max_concurrent_downloads"`
	ProgressInterval       duration `toml:"progress_interval"`
	PinnedImages           []string `toml:"pinned_images"`
}

type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) (err error) {
	d.Duration, err = time.ParseDuration(string(b))
	return err
}

// loadConfig reads the defaults, then path on top of them. A missing file
// is fine unless the user named it.
func loadConfig(path string, named bool) (*Config, error) {
	var c Config
	if _, err := toml.Decode(defaultConfig, &c); err != nil {
		return nil, fmt.Errorf("built-in default config: %w", err)
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && !named {
		return &c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if keys := md.Undecoded(); len(keys) > 0 {
		names := make([]string, len(keys))
		for i, k := range keys {
			names[i] = k.String()
		}
		return nil, fmt.Errorf("config %s: unknown keys %s (see `pierd config default`)", path, strings.Join(names, ", "))
	}
	return &c, c.validate()
}

func (c *Config) validate() error {
	switch c.CgroupDriver {
	case "", "systemd", "cgroupfs":
	default:
		return fmt.Errorf("cgroup_driver %q: want \"systemd\", \"cgroupfs\" or \"\"", c.CgroupDriver)
	}
	if !strings.HasPrefix(c.Listen, "unix://") {
		return fmt.Errorf("listen %q: want unix:///path/to.sock", c.Listen)
	}
	if _, ok := c.Runtimes[c.DefaultRuntime]; !ok {
		return fmt.Errorf("default_runtime %q has no [runtimes.%s] table", c.DefaultRuntime, c.DefaultRuntime)
	}
	for name, r := range c.Runtimes {
		if r.Path == "" {
			return fmt.Errorf("[runtimes.%s] needs a path", name)
		}
	}
	if c.Image.MaxConcurrentDownloads < 1 {
		return fmt.Errorf("image.max_concurrent_downloads must be at least 1")
	}
	if err := c.Metrics.Validate(); err != nil {
		return err
	}
	return nil
}
