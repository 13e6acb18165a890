package main

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// benchStreaming measures `crictl exec <id> true` latency and the
// throughput of 100 MB through `exec cat` and through a port-forward.
func benchStreaming(env *benchEnv, n int) error {
	ctx, ref, done, err := env.busybox(false)
	if err != nil {
		return err
	}
	defer done()
	podCfg := podConfig("bench-stream")
	pod, err := env.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		return err
	}
	defer env.removePod(ctx, pod.PodSandboxId)
	c, err := env.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, SandboxConfig: podCfg, Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "web"}, Image: &runtimeapi.ImageSpec{Image: ref, UserSpecifiedImage: ref},
		Command: []string{"sh", "-c", "mkdir -p /www; head -c 104857600 /dev/zero > /www/big; httpd -f -p 8080 -h /www"},
		Linux:   ctrLinux(),
	}})
	if err != nil {
		return err
	}
	if _, err := env.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
		return err
	}
	fmt.Printf("\nstreaming (%s)\n", env.target)
	for i, transport := range []string{"spdy", "websocket"} {
		if err := benchTransport(env, transport, c.ContainerId, pod.PodSandboxId, 18191+i, n); err != nil {
			if transport == "spdy" {
				return err
			}
			// Not every runtime serves WebSocket streams (CRI-O 1.34
			// does not): say so and go on.
			fmt.Printf("  %s: %v\n", transport, err)
		}
	}
	return nil
}

// benchTransport measures exec latency, exec and port-forward throughput
// with crictl's transport ("spdy" or "websocket"), port-forwarding
// localPort.
func benchTransport(env *benchEnv, transport, id, podID string, localPort, n int) error {
	crictl := func(args ...string) *exec.Cmd {
		return exec.Command("crictl", append([]string{"--runtime-endpoint", env.endpoint}, args...)...)
	}
	var lat []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		if out, err := crictl("exec", "--transport", transport, id, "true").CombinedOutput(); err != nil {
			return fmt.Errorf("crictl exec: %v: %s", err, out)
		}
		lat = append(lat, time.Since(start))
	}
	start := time.Now()
	sh := exec.Command("sh", "-c", fmt.Sprintf("head -c 104857600 /dev/zero | crictl --runtime-endpoint %s exec --transport %s -i %s cat | wc -c", env.endpoint, transport, id))
	out, err := sh.Output()
	catTime := time.Since(start)
	if err != nil || strings.TrimSpace(string(out)) != "104857600" {
		return fmt.Errorf("exec cat of 100 MB over %s: %q %v", transport, out, err)
	}
	pf := crictl("port-forward", "--transport", transport, podID, fmt.Sprintf("%d:8080", localPort))
	if err := pf.Start(); err != nil {
		return err
	}
	defer func() { pf.Process.Kill(); pf.Wait() }()
	var pfTime time.Duration
	for i := 0; i < 100; i++ { // the server and the big file need a moment
		start = time.Now()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/big", localPort))
		if err == nil {
			nb, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if nb == 104857600 {
				pfTime = time.Since(start)
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Printf("  %s: crictl exec <id> true: median %s  p90 %s over %d\n", transport, percentile(lat, 50), percentile(lat, 90), n)
	record("exec_"+transport+"_crictl_ms", ms(percentile(lat, 50)))
	fmt.Printf("  %s: 100 MB through exec cat: %.2f s  %.0f MB/s\n", transport, catTime.Seconds(), 104.8576/catTime.Seconds())
	if pfTime > 0 {
		fmt.Printf("  %s: 100 MB through a port-forward: %.2f s  %.0f MB/s\n", transport, pfTime.Seconds(), 104.8576/pfTime.Seconds())
	} else {
		fmt.Printf("  %s: port-forward: the 100 MB file could not be fetched\n", transport)
	}
	return nil
}
