package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// Set by flags: see main.
var (
	registryAddr string   // -registry
	helperNames  []string // -helpers
)

// daemonIdle reports and records the PSS of the runtime's daemon, idle.
func daemonIdle(pid int) {
	kib := pss(pid)
	fmt.Printf("daemon (pid %d) idle: PSS %d KiB, RSS %d KiB\n", pid, kib, rssKB(pid))
	record("daemon_idle_pss_kib", float64(kib))
}

// removePod stops and removes a pod, as kubelet does: its containers
// first, at once (their sleep, PID 1, ignores SIGTERM: a runtime would wait
// out a grace period), then the pod (a runtime may refuse to remove a
// running one).
func (e *benchEnv) removePod(ctx context.Context, id string) error {
	list, err := e.runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: id}})
	if err != nil {
		return err
	}
	for _, c := range list.Containers {
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			e.runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.Id})
		}
	}
	if _, err := e.runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		return err
	}
	_, err = e.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id})
	return err
}

// benchEnv is the CRI endpoint a benchmark measures: a given one, or a
// fresh pierd with a bridge network of its own.
type benchEnv struct {
	endpoint, target, dir string
	pid                   int              // pierd's, 0 for another runtime
	network               *testenv.Network // the fresh pierd's, nil for another runtime
	metrics               string           // the fresh pierd's /metrics URL, with envOptions.metrics
	runtime               runtimeapi.RuntimeServiceClient
	images                runtimeapi.ImageServiceClient
	cleanup               []func()
}

// envOptions are a fresh pierd's bridge network and whether it serves
// Prometheus metrics (on a free loopback port).
type envOptions struct {
	bridge, subnet string
	metrics        bool
}

func newEnv(endpoint, pierd string) (*benchEnv, error) {
	return newEnvWith(endpoint, pierd, envOptions{bridge: "pierbench0", subnet: "10.97.0.0/16"})
}

// newEnvWith is newEnv with a fresh pierd made as opts says.
func newEnvWith(endpoint, pierd string, opts envOptions) (*benchEnv, error) {
	dir, err := os.MkdirTemp("", "pier-bench-")
	if err != nil {
		return nil, err
	}
	env := &benchEnv{endpoint: endpoint, target: endpoint, dir: dir}
	env.cleanup = append(env.cleanup, func() { os.RemoveAll(dir) })
	if endpoint == "" {
		network, err := testenv.NewNetwork(filepath.Join(dir, "cni"), opts.bridge, opts.subnet)
		if err != nil {
			env.close()
			return nil, err
		}
		env.network = network
		env.cleanup = append(env.cleanup, func() { network.Close() })
		cfg := network.Config()
		if opts.metrics {
			addr, err := freeLoopbackPort()
			if err != nil {
				env.close()
				return nil, err
			}
			cfg += fmt.Sprintf("\n[metrics]\naddress = %q\n", addr)
			env.metrics = "http://" + addr + "/metrics"
		}
		p, err := testenv.StartPierd(testenv.PierdOptions{Binary: pierd, Dir: dir, Config: cfg, NodeLogging: true})
		if err != nil {
			env.close()
			return nil, err
		}
		env.cleanup = append(env.cleanup, func() { p.RemovePods(); p.Stop() })
		env.endpoint, env.target, env.pid = p.Endpoint(), "pier", p.Pid()
	}
	conn, err := grpc.NewClient(env.endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		env.close()
		return nil, err
	}
	env.cleanup = append(env.cleanup, func() { conn.Close() })
	env.runtime, env.images = runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)
	return env, nil
}

// close undoes newEnv, last made first.
func (e *benchEnv) close() {
	for i := len(e.cleanup) - 1; i >= 0; i-- {
		e.cleanup[i]()
	}
}

// podConfig is a pod named name as kubelet sends it for a pod without
// shareProcessNamespace: each container in a PID namespace of its own.
func podConfig(name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: fmt.Sprintf("%s-%d", name, time.Now().UnixNano())},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
}

// ctrLinux is a container's Linux settings as kubelet sends them in a pod
// made by podConfig: the container's own PID namespace (CRI-O refuses a
// container that asks for the pod's where the pod has none).
func ctrLinux() *runtimeapi.LinuxContainerConfig {
	return &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
	}}
}

// busybox serves the busybox test image from a registry of its own and
// pulls it through e, for a benchmark of at most ten minutes: done stops
// the registry (and, with removeImage, removes the image) and cancels ctx.
func (e *benchEnv) busybox(removeImage bool) (ctx context.Context, ref string, done func(), err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	ref, closeReg, err := pullBusybox(ctx, e)
	if err != nil {
		cancel()
		return nil, "", nil, err
	}
	return ctx, ref, func() {
		if removeImage {
			e.images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		}
		closeReg()
		cancel()
	}, nil
}
