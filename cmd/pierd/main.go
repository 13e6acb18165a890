// Command pierd is the pier daemon: it serves the Kubernetes CRI
// (RuntimeService and ImageService) on a unix socket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cdi"
	"github.com/pier-runtime/pier/cgroup"
	"github.com/pier-runtime/pier/cni"
	"github.com/pier-runtime/pier/confine"
	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/cri"
	"github.com/pier-runtime/pier/events"
	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/internal/privdir"
	"github.com/pier-runtime/pier/internal/proc"
	"github.com/pier-runtime/pier/nri"
	"github.com/pier-runtime/pier/platform"
	"github.com/pier-runtime/pier/sandbox"
	"github.com/pier-runtime/pier/streaming"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "pierd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("pierd", flag.ContinueOnError)
	klog.InitFlags(fs)
	configPath := fs.String("config", "/etc/pier/config.toml", "configuration file (TOML; see `pierd config default`)")
	root := fs.String("root", "", "persistent state directory (overrides the config's root)")
	state := fs.String("state", "", "volatile state directory (overrides the config's state)")
	listen := fs.String("listen", "", "CRI socket, unix:///path (overrides the config's listen)")
	showVersion := fs.Bool("version", false, "print the version and exit (as `pierd version`)")
	pprofAddr := fs.String("pprof", "", "serve Go's profiles (net/http/pprof) on this loopback host:port, e.g. 127.0.0.1:6060; off by default")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: pierd [flags]\n       pierd config default\n       pierd config check [--config path]\n       pierd version | --version\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if a := fs.Args(); len(a) >= 2 && a[0] == "config" && a[1] == "check" {
		return configCheck(fs, a[2:])
	}
	command := strings.Join(fs.Args(), " ")
	if *showVersion {
		command = "version"
	}
	switch command {
	case "":
	case "config default":
		fmt.Print(defaultConfig)
		return nil
	case "version":
		fmt.Println("pierd", version)
		return nil
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", command)
	}
	cfg, err := loadConfig(*configPath, flagGiven(fs, "config"))
	if err != nil {
		return err
	}
	noteFlags(fs, cfg)
	cfg.override(&Config{Root: *root, State: *state, Listen: *listen})
	if err := cfg.validate(); err != nil {
		return err
	}
	if *pprofAddr != "" {
		stop, err := servePprof(*pprofAddr)
		if err != nil {
			return err
		}
		defer stop()
	}
	return serve(cfg)
}

func serve(cfg *Config) error {
	klog.InfoS("Starting pierd", "version", version, "root", cfg.Root, "state", cfg.State, "listen", cfg.Listen)
	// Passable, not listable: what is inside is in per-object directories
	// that are root's alone (package privdir).
	for _, dir := range []string{cfg.Root, cfg.State} {
		if err := privdir.Make(dir, privdir.Passable); err != nil {
			return err
		}
	}
	obs := newObservers(cfg.Metrics)
	images, err := image.New(image.Options{
		Root:                      cfg.Root,
		MaxConcurrentDownloads:    cfg.Image.MaxConcurrentDownloads,
		ProgressInterval:          cfg.Image.ProgressInterval.Duration,
		PullProgressTimeout:       cfg.Image.pullProgressTimeout(),
		MaxLayerUncompressedBytes: cfg.Image.MaxLayerUncompressedBytes,
		Registries:                cfg.Registries,
		Pinned:                    cfg.Image.PinnedImages,
		Keychain:                  authn.DefaultKeychain,
		OnPull:                    obs.pull,
	})
	if err != nil {
		return fmt.Errorf("open image store: %w", err)
	}
	image.UserAgent = "pier/" + version
	platforms, err := platform.New(cfg.platforms(), platform.BinfmtDir)
	if err != nil {
		return err
	}
	logPlatforms(platforms)

	cgroups, err := cgroup.Detect(cfg.CgroupDriver)
	if err != nil {
		return err
	}
	klog.InfoS("Cgroups", "layout", cgroups.Layout(), "driver", cgroups.Driver, "controllers", cgroups.Info()["cgroupControllers"])
	network := cni.New(cni.Options{
		ConfDir:    cfg.CNI.ConfDir,
		PluginDirs: cfg.CNI.PluginDirs,
		CacheDir:   filepath.Join(cfg.Root, "cni"),
	})
	shimBinary, err := findShim(cfg.ShimBinary)
	if err != nil {
		return err
	}
	hub := events.NewHub(events.Buffer)
	plugins, err := newNRI(cfg.NRI)
	if err != nil {
		return err
	}
	// The managers' hooks, none when NRI is off (not a nil *nri.NRI, which
	// they would call for nothing).
	var podHooks sandbox.Hooks
	var containerHooks container.Hooks
	if plugins != nil {
		podHooks, containerHooks = plugins, plugins
	}
	pods, err := sandbox.New(sandbox.Options{
		Root:    filepath.Join(cfg.Root, "pods"),
		State:   filepath.Join(cfg.State, "pods"),
		CNI:     network,
		Cgroups: cgroups,
		StartPodInit: func(podID string, opts proc.PodInitOptions) (int, error) {
			return proc.StartPodInit(shimBinary, podID, opts)
		},
		IDMapDirs: []string{cfg.Root, cfg.State}, // image layers, containers
		OnEvent:   hub.PodEvent,
		Hooks:     podHooks,
	})
	if err != nil {
		return fmt.Errorf("load pod sandboxes: %w", err)
	}
	confinement, err := confine.Detect(cfg.Security.SeccompDefault)
	if err != nil {
		return fmt.Errorf("[security]: %w", err)
	}
	klog.InfoS("Confinement", "seccompDefault", confinement.SeccompDefault, "apparmor", confinement.Info()["apparmor"])
	handlers, runtimes := probeHandlers(cfg, cgroups.Driver == cgroup.Systemd)
	devices, err := cdi.New(cfg.CDI.SpecDirs)
	if err != nil {
		return err
	}
	containers, err := container.New(container.Options{
		Root:        filepath.Join(cfg.Root, "containers"),
		State:       filepath.Join(cfg.State, "containers"),
		SocketDir:   filepath.Join(cfg.State, "s"),
		ShimBinary:  shimBinary,
		Images:      images,
		Platforms:   platforms,
		Pods:        pods,
		Runtimes:    runtimes,
		Cgroups:     cgroups,
		OOMScoreAdj: ownOOMScoreAdj(),
		Confine:     confinement,
		Devices:     devices,
		OnExit:      obs.exit,
		OnEvent:     hub.ContainerEvent,
		Hooks:       containerHooks,
	})
	if err != nil {
		return fmt.Errorf("load containers: %w", err)
	}
	if err := plugins.Start(pods, containers, devices); err != nil {
		return err
	}
	defer plugins.Stop()
	stopMetrics, err := obs.serve(containers, pods)
	if err != nil {
		return err
	}
	defer stopMetrics()

	stream, err := streaming.NewServer(cfg.Streaming.Address, &streaming.Sessions{Containers: containers, Pods: pods})
	if err != nil {
		return err
	}
	go func() {
		if err := stream.Serve(); err != nil {
			klog.ErrorS(err, "Streaming server stopped")
		}
	}()
	defer stream.Stop()
	klog.InfoS("Streaming server listening", "address", stream.Addr())
	runtimeService := cri.NewRuntimeService(cri.RuntimeOptions{
		Version:        version,
		Cgroups:        cgroups,
		Confine:        confinement,
		Pods:           pods,
		Containers:     containers,
		Events:         hub,
		Stream:         stream,
		Network:        network,
		Handlers:       handlers,
		DefaultHandler: cfg.DefaultRuntime,
		Platforms:      platforms,
		Devices:        devices,
		NRI:            plugins,
	})

	server := grpc.NewServer(grpc.UnaryInterceptor(cri.NewInterceptor(obs.cri)), grpc.StreamInterceptor(cri.NewStreamInterceptor(obs.cri)))
	cri.Register(server,
		runtimeService,
		cri.NewImageService(images, platforms))
	reloadOnSIGHUP(cfg, cgroups.Driver == cgroup.Systemd, images, containers, runtimeService, handlers, platforms)

	socket := strings.TrimPrefix(cfg.Listen, "unix://")
	lis, err := listenUnix(socket)
	if err != nil {
		return err
	}
	defer os.Remove(socket)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sd := newSystemd(socket) // Type=notify: see notify.go
	go sd.run(ctx)
	go func() {
		<-ctx.Done()
		klog.InfoS("Shutting down")
		sd.stopping()
		hub.Close() // else the event streams hold GracefulStop
		t := time.AfterFunc(10*time.Second, server.Stop)
		server.GracefulStop()
		t.Stop()
	}()
	klog.InfoS("Serving CRI", "socket", socket)
	dropStartupPages()
	if err := server.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	klog.InfoS("Stopped")
	return nil
}

// listenUnix listens on socket (mode 0660, owned by root), replacing a
// stale socket file but never one a live pierd serves.
func listenUnix(socket string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o711); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", socket, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s is in use: is another pierd running?", socket)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(socket, 0o660); err != nil {
		lis.Close()
		return nil, err
	}
	if err := os.Chown(socket, 0, 0); err != nil {
		lis.Close()
		return nil, err
	}
	return lis, nil
}

// findShim locates pier-shim: the configured path, else beside pierd,
// else in PATH. pier-shim-monitor must be beside it.
func findShim(configured string) (string, error) {
	p := configured
	if p == "" {
		if exe, err := os.Executable(); err == nil && fileExists(filepath.Join(filepath.Dir(exe), "pier-shim")) {
			p = filepath.Join(filepath.Dir(exe), "pier-shim")
		} else if p, err = exec.LookPath("pier-shim"); err != nil {
			return "", fmt.Errorf("pier-shim not found beside pierd or in PATH: install it or set shim_binary in the config")
		}
	}
	if m := filepath.Join(filepath.Dir(p), "pier-shim-monitor"); !fileExists(m) {
		return "", fmt.Errorf("%s not found: pier-shim-monitor is installed beside pier-shim (make install)", m)
	}
	return p, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// ownOOMScoreAdj is pierd's oom_score_adj: containers may not go lower.
func ownOOMScoreAdj() int {
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// newNRI is NRI as [nri] configures it; nil when it is off.
func newNRI(c NRIConfig) (*nri.NRI, error) {
	if !c.Enable {
		return nil, nil
	}
	return nri.New(nri.Options{
		RuntimeName: "pier", RuntimeVersion: version,
		SocketPath: c.SocketPath, PluginPath: c.PluginPath, PluginConfigPath: c.PluginConfigPath,
		RegistrationTimeout: c.PluginRegistrationTimeout.Duration, RequestTimeout: c.PluginRequestTimeout.Duration,
	})
}
