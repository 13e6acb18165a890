package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// benchContainers measures create+start of a busybox sleep container in an
// existing pod (through crictl and a Go client) and the memory each
// running container costs.
func benchContainers(env *benchEnv, n int) error {
	ctx, ref, done, err := env.busybox(true)
	if err != nil {
		return err
	}
	defer done()

	ctrCfg := func(name string) *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: name}, Image: &runtimeapi.ImageSpec{Image: ref, UserSpecifiedImage: ref}, Command: []string{"sleep", "100000"}, Linux: ctrLinux()}
	}
	podCfg := podConfig("bench-ctr")
	pod, err := env.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg})
	if err != nil {
		return err
	}
	defer env.removePod(ctx, pod.PodSandboxId)

	// Through crictl: `crictl create` then `crictl start`.
	dir := env.dir
	podJSON := filepath.Join(dir, "bench-pod.json")
	os.WriteFile(podJSON, []byte(`{"metadata":{"name":"bench-ctr","namespace":"bench","uid":"x"},"linux":{"security_context":{"namespace_options":{"pid":1}}}}`), 0o644)
	crictl := func(args ...string) (string, error) {
		out, err := exec.Command("crictl", append([]string{"--runtime-endpoint", env.endpoint, "--image-endpoint", env.endpoint}, args...)...).Output()
		if e, ok := err.(*exec.ExitError); ok {
			err = fmt.Errorf("%v: %s", err, bytes.TrimSpace(e.Stderr))
		}
		return strings.TrimSpace(string(out)), err
	}
	var viaCrictl, crictlCreate, crictlStart, viaGo, goCreate, goStart []time.Duration
	for i := 0; i < n; i++ {
		ctrJSON := filepath.Join(dir, fmt.Sprintf("ctr-%d.json", i))
		os.WriteFile(ctrJSON, []byte(fmt.Sprintf(`{"metadata":{"name":"c%d"},"image":{"image":%q},"command":["sleep","100000"],"linux":{"security_context":{"namespace_options":{"pid":1}}}}`, i, ref)), 0o644)
		start := time.Now()
		id, err := crictl("create", pod.PodSandboxId, ctrJSON, podJSON)
		if err != nil {
			return fmt.Errorf("crictl create: %v", err)
		}
		created := time.Now()
		if _, err := crictl("start", id); err != nil {
			return fmt.Errorf("crictl start: %v", err)
		}
		viaCrictl = append(viaCrictl, time.Since(start))
		crictlCreate, crictlStart = append(crictlCreate, created.Sub(start)), append(crictlStart, time.Since(created))
	}
	for i := 0; i < n; i++ {
		start := time.Now()
		c, err := env.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: pod.PodSandboxId, Config: ctrCfg(fmt.Sprintf("g%d", i)), SandboxConfig: podCfg})
		if err != nil {
			return err
		}
		created := time.Now()
		if _, err := env.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			return err
		}
		viaGo = append(viaGo, time.Since(start))
		goCreate, goStart = append(goCreate, created.Sub(start)), append(goStart, time.Since(created))
	}
	if err := env.removePod(ctx, pod.PodSandboxId); err != nil {
		return err
	}
	fmt.Printf("\ncreate+start of a busybox sleep container (%s, %d containers in one pod)\n", env.target, n)
	fmt.Printf("  through crictl: median %s  p90 %s  (target with runc: median < 90ms; the peers: make bench-compare); create median %s, start median %s\n",
		percentile(viaCrictl, 50), percentile(viaCrictl, 90), percentile(crictlCreate, 50), percentile(crictlStart, 50))
	fmt.Printf("  through a Go client: median %s  p90 %s  (target: < 55ms); create median %s, start median %s\n",
		percentile(viaGo, 50), percentile(viaGo, 90), percentile(goCreate, 50), percentile(goStart, 50))
	record("create_crictl_ms", ms(percentile(crictlCreate, 50)))
	record("start_crictl_ms", ms(percentile(crictlStart, 50)))
	record("create_start_go_ms", ms(percentile(viaGo, 50)))

	// A pod and its container from nothing: runp, create, start through
	// crictl, timed together.
	var whole []time.Duration
	var wholePods []string
	defer func() {
		for _, id := range wholePods {
			env.removePod(ctx, id)
		}
	}()
	for i := 0; i < n; i++ {
		podI := filepath.Join(dir, fmt.Sprintf("rcs-pod-%d.json", i))
		os.WriteFile(podI, []byte(fmt.Sprintf(`{"metadata":{"name":"bench-rcs-%d","namespace":"bench","uid":"bench-rcs-%d-%d"},"linux":{"security_context":{"namespace_options":{"pid":1}}}}`, i, i, time.Now().UnixNano())), 0o644)
		ctrJSON := filepath.Join(dir, fmt.Sprintf("ctr-%d.json", i))
		start := time.Now()
		podID, err := crictl("runp", podI)
		if err != nil {
			return fmt.Errorf("crictl runp: %v", err)
		}
		wholePods = append(wholePods, podID)
		id, err := crictl("create", podID, ctrJSON, podI)
		if err != nil {
			return fmt.Errorf("crictl create: %v", err)
		}
		if _, err := crictl("start", id); err != nil {
			return fmt.Errorf("crictl start: %v", err)
		}
		whole = append(whole, time.Since(start))
	}
	fmt.Printf("  runp + create + start through crictl: median %s  p90 %s\n", percentile(whole, 50), percentile(whole, 90))
	record("runp_create_start_crictl_ms", ms(percentile(whole, 50)))
	for _, id := range wholePods {
		if err := env.removePod(ctx, id); err != nil {
			return err
		}
	}
	wholePods = nil

	// Memory: 10 pods of one running container each.
	const pods = 10
	pssBefore, rssBefore := pss(env.pid), rssKB(env.pid)
	var ids []string
	for i := 0; i < pods; i++ {
		cfg := podConfig(fmt.Sprintf("bench-mem-%d", i))
		p, err := env.runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			return err
		}
		defer env.removePod(ctx, p.PodSandboxId)
		c, err := env.runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.PodSandboxId, Config: ctrCfg("mem"), SandboxConfig: cfg})
		if err != nil {
			return err
		}
		if _, err := env.runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.ContainerId}); err != nil {
			return err
		}
		ids = append(ids, p.PodSandboxId, c.ContainerId)
	}
	helpers := helperProcs(helperNames, ids)
	var helperPSS int
	for _, pid := range helpers {
		helperPSS += pss(pid)
	}
	fmt.Printf("\nmemory with %d running pods of one container each (%s)\n", pods, env.target)
	fmt.Printf("  helpers: %d processes (%s), PSS %d KiB in all, %d KiB per pod\n", len(helpers), procNames(helpers), helperPSS, helperPSS/pods)
	record("pod_helpers", float64(len(helpers))/pods)
	record("pod_helpers_pss_kib", float64(helperPSS)/pods)
	if env.pid != 0 {
		growth := pss(env.pid) - pssBefore
		fmt.Printf("  daemon: PSS +%d KiB per pod, RSS +%d KiB per pod\n", growth/pods, (rssKB(env.pid)-rssBefore)/pods)
		// The daemon's heap may shrink meanwhile (a GC): a pod never costs
		// less than nothing.
		fmt.Printf("  per pod in all: %d KiB PSS (target < 250 KiB; the peers: make bench-compare)\n", (helperPSS+max(growth, 0))/pods)
		record("pod_daemon_growth_kib", float64(growth)/pods)
		record("pod_memory_pss_kib", float64(helperPSS+max(growth, 0))/pods)
	}
	return nil
}

// pullBusybox serves the busybox test image from a registry of its own and
// pulls it through env; closeReg stops the registry.
func pullBusybox(ctx context.Context, env *benchEnv) (ref string, closeReg func(), err error) {
	reg, err := testenv.StartRegistry(testenv.RegistryOptions{Addr: registryAddr})
	if err != nil {
		return "", nil, err
	}
	img, err := testenv.Busybox()
	if err == nil {
		_, err = reg.Push("bench/busybox:1", img)
	}
	if err == nil {
		ref = reg.Ref("bench/busybox:1")
		_, err = env.images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	}
	if err != nil {
		reg.Close()
		return "", nil, err
	}
	return ref, func() { reg.Close() }, nil
}

// pss is a process's proportional set size in KiB, from smaps_rollup.
func pss(pid int) int {
	return statusField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
}

func rssKB(pid int) int {
	return statusField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
}

func statusField(path, field string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			f := strings.Fields(strings.TrimPrefix(l, field))
			if len(f) > 0 {
				n, _ := strconv.Atoi(f[0])
				return n
			}
		}
	}
	return 0
}
