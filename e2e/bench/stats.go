package main

import (
	"fmt"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// statsCalls is how many times each stats RPC is timed.
const statsCalls = 20

// benchStats measures ListPodSandboxStats and ListContainerStats through a
// Go client with n pods of one running busybox container each, each pod
// under a cgroup parent of its own as kubelet makes them (target: < 100 ms
// for 100 pods).
func benchStats(env *benchEnv, n int) error {
	ctx, ref, done, err := env.busybox(true)
	if err != nil {
		return err
	}
	defer done()
	const parent = "/pier-bench-stats"
	defer testenv.RemoveCgroupTree(parent)
	setupStart := time.Now()
	for i := 0; i < n; i++ {
		cfg := podConfig(fmt.Sprintf("bench-stats-%d", i))
		cfg.Linux.CgroupParent = fmt.Sprintf("%s/pod%d", parent, i)
		p, err := env.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			return err
		}
		defer env.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.PodSandboxId})
		c, err := env.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.PodSandboxId, SandboxConfig: cfg,
			Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "sleep"}, Image: &runtimeapi.ImageSpec{Image: ref}, Command: []string{"sleep", "100000"}}})
		if err != nil {
			return err
		}
		if _, err := env.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			return err
		}
	}
	setup := time.Since(setupStart)
	var pods, containers []time.Duration
	for i := 0; i < statsCalls; i++ {
		start := time.Now()
		ps, err := env.runtime.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{})
		if err != nil {
			return err
		}
		pods = append(pods, time.Since(start))
		start = time.Now()
		cs, err := env.runtime.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
		if err != nil {
			return err
		}
		containers = append(containers, time.Since(start))
		if len(ps.Stats) < n || len(cs.Stats) < n {
			return fmt.Errorf("stats of %d pods and %d containers, want %d each", len(ps.Stats), len(cs.Stats), n)
		}
	}
	fmt.Printf("\nstats of %d pods of one running container each (%s, Go client, %d calls; %s to set up)\n", n, env.target, statsCalls, setup.Round(time.Second))
	fmt.Printf("  ListPodSandboxStats: median %s  p95 %s  (target < 100ms)\n", percentile(pods, 50), percentile(pods, 95))
	fmt.Printf("  ListContainerStats:  median %s  p95 %s  (target < 100ms)\n", percentile(containers, 50), percentile(containers, 95))
	return nil
}
