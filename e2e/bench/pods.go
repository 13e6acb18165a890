package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// benchPods measures RunPodSandbox through crictl and a Go client.
func benchPods(env *benchEnv, n int) error {
	endpoint, dir, rt := env.endpoint, env.dir, env.runtime
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var made []string
	defer func() {
		for _, id := range made {
			env.removePod(ctx, id)
		}
	}()

	// Through crictl, as a person or a script would.
	var viaCrictl []time.Duration
	for i := 0; i < n; i++ {
		cfg := filepath.Join(dir, fmt.Sprintf("pod-%d.json", i))
		os.WriteFile(cfg, []byte(fmt.Sprintf(`{"metadata":{"name":"bench-crictl-%d","namespace":"bench","uid":"bench-crictl-%d-%d"},"linux":{"security_context":{"namespace_options":{"pid":1}}}}`, i, i, time.Now().UnixNano())), 0o644)
		start := time.Now()
		out, err := exec.Command("crictl", "--runtime-endpoint", endpoint, "runp", cfg).Output()
		viaCrictl = append(viaCrictl, time.Since(start))
		if e, ok := err.(*exec.ExitError); ok {
			return fmt.Errorf("crictl runp: %v: %s", err, strings.TrimSpace(string(e.Stderr)))
		} else if err != nil {
			return fmt.Errorf("crictl runp: %v", err)
		}
		made = append(made, strings.TrimSpace(string(out)))
	}
	rss := rssKB(env.pid)
	for _, id := range made {
		if err := env.removePod(ctx, id); err != nil {
			return err
		}
	}
	made = nil

	// Through a Go client: the runtime's own latency.
	var viaGo []time.Duration
	for i := 0; i < n; i++ {
		cfg := podConfig(fmt.Sprintf("bench-go-%d", i))
		start := time.Now()
		resp, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		viaGo = append(viaGo, time.Since(start))
		if err != nil {
			return err
		}
		made = append(made, resp.PodSandboxId)
	}
	fmt.Printf("\nRunPodSandbox (%s, %d pods, bridge network)\n", env.target, n)
	fmt.Printf("  through crictl: median %s  p90 %s  (target: median < 60ms; the peers: make bench-compare)\n", percentile(viaCrictl, 50), percentile(viaCrictl, 90))
	fmt.Printf("  through a Go client: median %s  p90 %s\n", percentile(viaGo, 50), percentile(viaGo, 90))
	if rss != 0 {
		fmt.Printf("  daemon RSS with %d pods: %d KiB\n", n, rss)
	}
	record("runp_crictl_ms", ms(percentile(viaCrictl, 50)))
	record("runp_go_ms", ms(percentile(viaGo, 50)))
	return nil
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100].Round(100 * time.Microsecond)
}
