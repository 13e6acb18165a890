// Command bench measures pier against any CRI endpoint:
//
//   - pull: the time to pull and unpack a ~200 MB image of five gzip layers
//     from a registry on loopback into a cold store, beside a reference
//     done with the system's tools: `sha256sum` and `gzip -dc | tar -x` of
//     each layer file in turn;
//   - pods: RunPodSandbox latency (median, p90) over 20 pods on the default
//     bridge network, through crictl and through a Go client, and pierd's
//     RSS with those pods running;
//   - containers: create+start latency of a busybox sleep container in a
//     pod (crictl and Go client), runp + create + start through crictl,
//     and the memory (PSS) each pod of one running container costs in
//     helper processes (pier-shim, -helpers) and the daemon;
//   - streaming: `crictl exec <id> true` latency, and 100 MB through
//     `exec cat` and through a port-forward;
//   - stats: ListPodSandboxStats and ListContainerStats latency (median,
//     p95) through a Go client with 100 pods of one running container each;
//   - scale (only with -only scale): 10, 50 and 100 pods of two containers
//     started from 10 concurrent clients, with the time to start them,
//     memory per pod, pierd's RSS and goroutines and listing latencies at
//     each size, whether each grows faster than linearly, and (-plot) the
//     curves as SVG.
//
// Without -endpoint it starts a fresh pierd (-pierd) on a temporary root
// (for every pull run), with a bridge network of its own for the pods. With
// -endpoint it measures that runtime as it is configured: it removes the
// image before every pull, and removes the pods it made. For another
// runtime, -pid names its daemon (for its idle PSS and its growth with
// pods), -helpers the processes it runs per pod or container, -registry the
// address its registries are configured with; -json writes the figures for
// e2e/benchcompare, which runs this against containerd, CRI-O and pier.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

func main() {
	endpoint := flag.String("endpoint", "", "CRI endpoint to measure, unix:///path (default: a fresh pierd per run)")
	pierd := flag.String("pierd", "bin/pierd", "pierd binary, when no -endpoint is given")
	runs := flag.Int("runs", 5, "pulls to measure; the median is reported")
	cache := flag.String("cache", testenv.BigCacheDir, "where the image's layer files are built and kept")
	pods := flag.Int("pods", 20, "pods to start in the pod benchmark")
	statsPods := flag.Int("stats-pods", 100, "pods (of one container each) in the stats benchmark")
	only := flag.String("only", "", `run only these benchmarks, comma-separated: "pull", "pods", "containers", "streaming", "stats"; or "scale" (run only when asked)`)
	pid := flag.Int("pid", 0, "with -endpoint: the runtime daemon's pid, for its idle PSS and its growth with pods")
	helpers := flag.String("helpers", "pier-shim,pier-shim-monitor", "comma-separated names of the processes the runtime runs per pod or container (shims, conmon, pause), counted in the memory per pod")
	flag.StringVar(&registryAddr, "registry", "", "serve the test registries on this address, 127.0.0.1:PORT, one at a time (default: a free port each)")
	jsonOut := flag.String("json", "", "also write the figures to this file, as JSON")
	scalePods := flag.String("scale-pods", "10,50,100", "pod counts (of 2 containers each) in the scale benchmark")
	plot := flag.String("plot", "", "SVG file to draw the scale benchmark's curves to, e.g. docs/perf/scale.svg")
	flag.Parse()
	helperNames = strings.Split(*helpers, ",")
	run := func(name string) bool { return *only == "" || slices.Contains(strings.Split(*only, ","), name) }
	var err error
	if *pid != 0 {
		daemonIdle(*pid)
	}
	if *only == "scale" {
		var sizes []int
		if sizes, err = parseSizes(*scalePods); err == nil {
			err = benchScale(*endpoint, *pierd, sizes, *plot)
		}
	} else if run("pull") {
		err = benchPull(*endpoint, *pierd, *runs, *cache)
	}
	if err == nil && *only != "scale" && (run("pods") || run("containers") || run("streaming") || run("stats")) {
		var env *benchEnv
		if env, err = newEnv(*endpoint, *pierd); err == nil {
			if *pid != 0 {
				env.pid = *pid
			} else if env.pid != 0 {
				daemonIdle(env.pid)
			}
			if run("pods") {
				err = benchPods(env, *pods)
			}
			if err == nil && run("containers") {
				err = benchContainers(env, *pods)
			}
			if err == nil && run("streaming") {
				err = benchStreaming(env, *pods)
			}
			if err == nil && run("stats") {
				err = benchStats(env, *statsPods)
			}
			env.close()
		}
	}
	if err == nil && *jsonOut != "" {
		target := "pier"
		if *endpoint != "" {
			target = *endpoint
		}
		err = writeFigures(*jsonOut, target)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func benchPull(endpoint, pierd string, runs int, cache string) error {
	img, err := testenv.Big(cache)
	if err != nil {
		return err
	}
	reg, err := testenv.StartRegistry(testenv.RegistryOptions{Addr: registryAddr})
	if err != nil {
		return err
	}
	defer reg.Close()
	if _, err := reg.Push("bench/big:1", img); err != nil {
		return err
	}
	ref := reg.Ref("bench/big:1")
	size, err := compressedSize(cache)
	if err != nil {
		return err
	}

	ref0, err := reference(cache)
	if err != nil {
		return err
	}
	var times []time.Duration
	for i := 0; i < runs; i++ {
		d, err := pullOnce(endpoint, pierd, ref)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		times = append(times, d)
	}
	slices.Sort(times)
	median := times[len(times)/2]
	target := "pier"
	if endpoint != "" {
		target = endpoint
	}
	mb := float64(size) / 1e6
	fmt.Printf("image pull (%s, %.1f MB, 5 gzip layers, cold store, loopback registry)\n", target, mb)
	fmt.Printf("  pull+unpack: median %.3f s  %.0f MB/s  (runs: %v)\n", median.Seconds(), mb/median.Seconds(), times)
	refSecs := ref0.total().Seconds()
	fmt.Printf("  reference, per layer in turn, sha256sum + gzip -dc | tar -x: %.3f s  %.0f MB/s  (sha256sum %.3f s, gzip -dc | tar -x %.3f s)\n",
		refSecs, mb/refSecs, ref0.hash.Seconds(), ref0.unpack.Seconds())
	fmt.Printf("  %s's throughput: %.1f times the reference's (ratio pull/reference %.2f)\n",
		target, refSecs/median.Seconds(), median.Seconds()/refSecs)
	record("pull_ms", ms(median))
	record("pull_mb", mb)
	record("pull_reference_ms", ms(ref0.total()))
	return nil
}

// pullOnce pulls ref into a cold store and returns how long PullImage took.
func pullOnce(endpoint, pierd, ref string) (time.Duration, error) {
	if endpoint == "" {
		dir, err := os.MkdirTemp("", "pier-bench-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		p, err := testenv.StartPierd(testenv.PierdOptions{Binary: pierd, Dir: dir, NodeLogging: true})
		if err != nil {
			return 0, err
		}
		defer p.Stop()
		endpoint = p.Endpoint()
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	images := runtimeapi.NewImageServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	spec := &runtimeapi.ImageSpec{Image: ref}
	if _, err := images.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: spec}); err != nil {
		return 0, err
	}
	exec.Command("sync").Run()
	start := time.Now()
	if _, err := images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: spec}); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// refTimes is how long the reference took: sha256sum of every layer
// blob, and gzip -dc | tar -x of every layer, one layer after another.
type refTimes struct {
	hash, unpack time.Duration
}

func (r refTimes) total() time.Duration { return r.hash + r.unpack }

// reference does by hand, with the system's tools, what a pull does with
// the layer files once they are here: per layer, one after another,
// `sha256sum` of the blob (the digest check), then `gzip -dc | tar -x`
// into a directory of its own. It times each.
func reference(cache string) (refTimes, error) {
	var t refTimes
	files, err := testenv.BigLayerFiles(cache)
	if err != nil {
		return t, err
	}
	dir, err := os.MkdirTemp("", "pier-bench-tar-")
	if err != nil {
		return t, err
	}
	defer os.RemoveAll(dir)
	exec.Command("sync").Run()
	for i, f := range files {
		out := filepath.Join(dir, fmt.Sprint(i))
		if err := os.Mkdir(out, 0o755); err != nil {
			return t, err
		}
		start := time.Now()
		if b, err := exec.Command("sha256sum", f).CombinedOutput(); err != nil {
			return t, fmt.Errorf("sha256sum %s: %v: %s", f, err, b)
		}
		t.hash += time.Since(start)
		start = time.Now()
		cmd := exec.Command("sh", "-c", `gzip -dc "$1" | tar -x -C "$2"`, "sh", f, out)
		if b, err := cmd.CombinedOutput(); err != nil {
			return t, fmt.Errorf("gzip -dc | tar -x %s: %v: %s", f, err, b)
		}
		t.unpack += time.Since(start)
	}
	return t, nil
}

func compressedSize(cache string) (int64, error) {
	files, err := testenv.BigLayerFiles(cache)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return 0, err
		}
		n += fi.Size()
	}
	return n, nil
}
