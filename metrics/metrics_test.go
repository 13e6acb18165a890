package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/grpc/codes"

	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/sandbox"
)

type fakeContainers struct {
	states map[container.State]int
	shims  int
}

func (f fakeContainers) Census() (map[container.State]int, int) { return f.states, f.shims }

type fakePods []*sandbox.Sandbox

func (f fakePods) List(sandbox.Filter) []*sandbox.Sandbox { return f }

func newTest(process bool) *Metrics {
	m := New(Options{Version: "v9.9.9", NoProcess: !process})
	m.AddCensus(
		fakeContainers{map[container.State]int{container.Running: 2, container.Exited: 1}, 3},
		fakePods{{State: sandbox.Ready}, {State: sandbox.Ready}, {State: sandbox.NotReady}})
	return m
}

// TestFamilies: what the registry holds after some events, family by
// family, in the exposition format.
func TestFamilies(t *testing.T) {
	m := newTest(false)
	m.ObserveCRI("/runtime.v1.RuntimeService/Version", codes.OK, 2*time.Millisecond)
	m.ObserveCRI("/runtime.v1.RuntimeService/Version", codes.OK, 3*time.Millisecond)
	m.ObserveCRI("/runtime.v1.ImageService/PullImage", codes.NotFound, 700*time.Millisecond)
	m.ObservePull(image.PullStats{Bytes: 1000, Duration: 2 * time.Second})
	m.ObservePull(image.PullStats{Bytes: 24, Duration: time.Second, Err: fmt.Errorf("x: %w", image.ErrNotFound)})
	m.ObservePull(image.PullStats{Err: errors.New("disk full")})
	m.ObserveExit("Completed")
	m.ObserveExit("OOMKilled")

	want := `
# HELP pier_build_info pierd's version, as a label; the value is 1.
# TYPE pier_build_info gauge
pier_build_info{version="v9.9.9"} 1
# HELP pier_container_oom_kills_total Container exits recorded as OOMKilled (the kernel's OOM killer ended a process of the container's cgroup).
# TYPE pier_container_oom_kills_total counter
pier_container_oom_kills_total 1
# HELP pier_containers Containers pier holds, by state.
# TYPE pier_containers gauge
pier_containers{state="created"} 0
pier_containers{state="exited"} 1
pier_containers{state="running"} 2
pier_containers{state="unknown"} 0
# HELP pier_cri_requests_total CRI requests answered, by method and gRPC code.
# TYPE pier_cri_requests_total counter
pier_cri_requests_total{code="NotFound",method="PullImage"} 1
pier_cri_requests_total{code="OK",method="Version"} 2
# HELP pier_image_pull_bytes_total Layer bytes fetched from registries (compressed, as sent), failed pulls included; layers already stored are not fetched.
# TYPE pier_image_pull_bytes_total counter
pier_image_pull_bytes_total 1024
# HELP pier_image_pull_failures_total Image pulls that failed, by reason.
# TYPE pier_image_pull_failures_total counter
pier_image_pull_failures_total{reason="bad_layer"} 0
pier_image_pull_failures_total{reason="canceled"} 0
pier_image_pull_failures_total{reason="corrupt"} 0
pier_image_pull_failures_total{reason="deadline_exceeded"} 0
pier_image_pull_failures_total{reason="invalid_reference"} 0
pier_image_pull_failures_total{reason="no_space"} 0
pier_image_pull_failures_total{reason="not_found"} 1
pier_image_pull_failures_total{reason="other"} 1
pier_image_pull_failures_total{reason="platform"} 0
pier_image_pull_failures_total{reason="too_large"} 0
pier_image_pull_failures_total{reason="unauthorized"} 0
pier_image_pull_failures_total{reason="unavailable"} 0
# HELP pier_pods Pod sandboxes pier holds, by state.
# TYPE pier_pods gauge
pier_pods{state="notready"} 1
pier_pods{state="ready"} 2
# HELP pier_shims Containers whose pier-shim monitor pierd follows (started or reconnected to, not yet deleted or lost).
# TYPE pier_shims gauge
pier_shims 3
`
	names := []string{"pier_build_info", "pier_container_oom_kills_total", "pier_containers", "pier_cri_requests_total",
		"pier_image_pull_bytes_total", "pier_image_pull_failures_total", "pier_pods", "pier_shims"}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// Histograms: counts and sums.
	if n, err := testutil.GatherAndCount(m.Registry(), "pier_cri_request_duration_seconds"); err != nil || n != 2 {
		t.Fatalf("CRI latency series: %d, %v (want one per method)", n, err)
	}
	out, err := testutil.GatherAndFormat(m.Registry(), expfmt.TypeTextPlain, "pier_image_pull_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"pier_image_pull_duration_seconds_count 1", "pier_image_pull_duration_seconds_sum 2", `pier_image_pull_duration_seconds_bucket{le="2.5"} 1`, `pier_image_pull_duration_seconds_bucket{le="1"} 0`} {
		if !strings.Contains(string(out), line+"\n") {
			t.Errorf("pull duration lacks %q:\n%s", line, out)
		}
	}
	out, err = testutil.GatherAndFormat(m.Registry(), expfmt.TypeTextPlain, "pier_cri_request_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{`pier_cri_request_duration_seconds_count{method="Version"} 2`, `pier_cri_request_duration_seconds_bucket{method="Version",le="0.001"} 0`, `pier_cri_request_duration_seconds_bucket{method="Version",le="0.005"} 2`, `pier_cri_request_duration_seconds_bucket{method="PullImage",le="1"} 1`} {
		if !strings.Contains(string(out), line+"\n") {
			t.Errorf("CRI latency lacks %q:\n%s", line, out)
		}
	}
}

// TestLint: every family, pierd's own included, passes promlint (units in
// names, _total counters, help text).
func TestLint(t *testing.T) {
	m := newTest(true)
	m.ObserveCRI("/runtime.v1.RuntimeService/Version", codes.OK, time.Millisecond)
	m.ObservePull(image.PullStats{Bytes: 1, Duration: time.Second})
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range families {
		have[f.GetName()] = true
		if n := f.GetName(); !strings.HasPrefix(n, "pier_") && !strings.HasPrefix(n, "process_") && !strings.HasPrefix(n, "go_") {
			t.Errorf("family %s: not pier_, process_ or go_", n)
		}
	}
	for _, n := range []string{"pier_cri_requests_total", "pier_cri_request_duration_seconds", "pier_image_pull_bytes_total",
		"pier_image_pull_duration_seconds", "pier_image_pull_failures_total", "pier_containers", "pier_pods", "pier_shims",
		"pier_container_oom_kills_total", "pier_build_info", "process_resident_memory_bytes", "process_cpu_seconds_total",
		"process_open_fds", "go_goroutines", "go_memstats_heap_alloc_bytes"} {
		if !have[n] {
			t.Errorf("no family %s", n)
		}
	}
}

// TestServer: /metrics over HTTP on a loopback port chosen by the kernel;
// other paths are not found.
func TestServer(t *testing.T) {
	m := newTest(true)
	if _, err := Listen(Config{Address: "0.0.0.0:0"}, m); err == nil {
		t.Fatal("a non-loopback address was accepted without allow_non_loopback")
	}
	srv, err := Listen(Config{Address: "127.0.0.1:0"}, m)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	get := func(path string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+srv.Addr()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, "pier_pods{state=\"ready\"} 2\n") || !strings.Contains(body, "process_resident_memory_bytes ") {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	if code, _ := get("/"); code != 404 {
		t.Fatalf("GET /: %d", code)
	}
	srv.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
