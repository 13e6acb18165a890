package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// TestMetrics: with [metrics] address set (port 0: pierd logs the one the
// kernel chose), /metrics counts what a pull, a failed pull, a pod, a
// running container and an OOM-killed one did.
func TestMetrics(t *testing.T) {
	p := startPierd(t, "[metrics]\naddress = \"127.0.0.1:0\"\n")
	url := metricsURL(t, p)

	mustPull(t, p, reg.Ref(busyboxImg))
	if _, err := pull(t, p, reg.Ref("e2e/nosuch:1"), nil); status.Code(err) != codes.NotFound {
		t.Fatalf("pull of a missing image: %v", err)
	}
	podID, pod := podWithLogs(t, p, "metrics")
	startContainer(t, p, podID, pod, containerConfig("sleeper", "sleep", "1000"))
	oom := containerConfig("oom", "sh", "-c", "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done")
	oom.Linux = &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}}
	id := startContainer(t, p, podID, pod, oom)
	if st := waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_EXITED); st.Reason != "OOMKilled" {
		t.Fatalf("oom container: exit %d reason %q", st.ExitCode, st.Reason)
	}

	got := scrape(t, url)
	for series, want := range map[string]float64{
		`pier_pods{state="ready"}`:                                               1,
		`pier_pods{state="notready"}`:                                            0,
		`pier_containers{state="running"}`:                                       1,
		`pier_containers{state="exited"}`:                                        1,
		`pier_containers{state="created"}`:                                       0,
		`pier_shims`:                                                             2,
		`pier_container_oom_kills_total`:                                         1,
		`pier_image_pull_failures_total{reason="not_found"}`:                     1,
		`pier_image_pull_failures_total{reason="unavailable"}`:                   0,
		`pier_image_pull_duration_seconds_count`:                                 1,
		`pier_cri_requests_total{code="OK",method="PullImage"}`:                  1,
		`pier_cri_requests_total{code="NotFound",method="PullImage"}`:            1,
		`pier_cri_requests_total{code="OK",method="RunPodSandbox"}`:              1,
		`pier_cri_requests_total{code="OK",method="StartContainer"}`:             2,
		`pier_cri_request_duration_seconds_count{method="CreateContainer"}`:      2,
		`pier_cri_request_duration_seconds_bucket{method="PullImage",le="+Inf"}`: 2,
	} {
		if v, ok := got[series]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", series, v, ok, want)
		}
	}
	build := false
	for k, v := range got {
		build = build || strings.HasPrefix(k, `pier_build_info{version="`) && v == 1
	}
	if !build {
		t.Error("no pier_build_info")
	}
	// The image's layers were fetched, once: its size less its config's.
	size := float64(imageStatus(t, p, reg.Ref(busyboxImg)).Image.GetSize())
	if b := got["pier_image_pull_bytes_total"]; b > size || b < size-16<<10 {
		t.Errorf("pier_image_pull_bytes_total = %v, want the image's %v bytes less its config's", b, size)
	}
	for _, s := range []string{"process_resident_memory_bytes", "process_open_fds", "go_goroutines"} {
		if got[s] <= 0 {
			t.Errorf("%s = %v", s, got[s])
		}
	}

	// Removing the pod leaves no shim, no container and no pod.
	if err := p.RemovePods(); err != nil {
		t.Fatal(err)
	}
	got = scrape(t, url)
	for _, s := range []string{`pier_pods{state="ready"}`, `pier_containers{state="running"}`, `pier_containers{state="exited"}`, `pier_shims`} {
		if got[s] != 0 {
			t.Errorf("after the pod's removal: %s = %v", s, got[s])
		}
	}
	if got[`pier_container_oom_kills_total`] != 1 {
		t.Errorf("the OOM kill counter went back: %v", got[`pier_container_oom_kills_total`])
	}
}

// metricsURL is the /metrics URL pierd logged.
func metricsURL(t *testing.T, p *testenv.Pierd) string {
	t.Helper()
	m := regexp.MustCompile(`"Serving metrics" address="(http://127\.0\.0\.1:[0-9]+/metrics)"`).FindStringSubmatch(p.LogText())
	if m == nil {
		t.Fatalf("pierd did not log its metrics address:\n%s", p.LogText())
	}
	return m[1]
}

// scrape reads /metrics into a map of series (as written, labels sorted)
// to value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(c, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s %s\n%s", url, resp.Status, resp.Header.Get("Content-Type"), b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
