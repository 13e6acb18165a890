package kubelet

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// checkEventsAndStreaming checks that kubelet, with the EventedPLEG and
// CRIListStreaming feature gates, used pier's container events and list
// streams for the whole run so far (it runs before pierd is restarted):
// one GetContainerEvents subscriber from before the first pod ran, never
// dropped nor ended; StreamPodSandboxes, StreamContainers and StreamImages
// answered, never failed; and kubelet never fell back to the unary lists
// nor gave up its event stream; and kubelet's metrics say it connected
// once, never failed, and received events.
func checkEventsAndStreaming(t *testing.T, n *node) {
	m, err := kubeletMetrics(n)
	if err != nil {
		t.Fatal(err)
	}
	if ok, errs, events := m["kubelet_evented_pleg_connection_success_count"], m["kubelet_evented_pleg_connection_error_count"], m["kubelet_evented_pleg_connection_latency_seconds_count"]; ok != 1 || errs != 0 || events == 0 {
		t.Errorf("kubelet's evented PLEG: %v connections, %v errors, %v events; want 1, 0 and some", ok, errs, events)
	} else {
		t.Logf("kubelet's evented PLEG received %v events on one connection", events)
	}

	pier := n.pierd.LogText()
	added := strings.Index(pier, `"Container events subscriber added"`)
	firstPod := strings.Index(pier, `method="/runtime.v1.RuntimeService/RunPodSandbox"`)
	switch {
	case added < 0:
		t.Error("kubelet never subscribed to pier's container events (GetContainerEvents)")
	case firstPod >= 0 && firstPod < added:
		t.Error("kubelet subscribed to pier's container events only after it ran a pod")
	}
	if c := strings.Count(pier, `"Container events subscriber added"`); c != 1 {
		t.Errorf("pier logged %d events subscribers, want kubelet's one", c)
	}
	for _, s := range []string{`"Container events subscriber removed"`, `"Dropped container events subscribers that fell behind`} {
		if strings.Contains(pier, s) {
			t.Errorf("pier's log has %s: kubelet's event stream ended during the run", s)
		}
	}
	for _, rpc := range []string{"RuntimeService/StreamPodSandboxes", "RuntimeService/StreamContainers", "ImageService/StreamImages"} {
		method := `method="/runtime.v1.` + rpc + `"`
		calls := 0
		for _, line := range strings.Split(pier, "\n") {
			if !strings.Contains(line, method) {
				continue
			}
			if strings.Contains(line, `"CRI request failed"`) {
				t.Errorf("%s failed: %s", rpc, line)
			} else if strings.Contains(line, `"CRI request"`) {
				calls++
			}
		}
		if calls == 0 {
			t.Errorf("kubelet never called %s", rpc)
		}
		t.Logf("%s: %d calls", rpc, calls)
	}
	for _, line := range strings.Split(pier, "\n") {
		if strings.Contains(line, `method="/runtime.v1.RuntimeService/GetContainerEvents"`) && strings.Contains(line, `"CRI request failed"`) {
			t.Errorf("kubelet's event stream failed: %s", line)
		}
	}
	kubelet := n.kubelet.LogText()
	for _, s := range []string{
		// The list streams (the stats streams are checked with the stats).
		"StreamPodSandboxes not implemented, falling back",
		"StreamContainers not implemented, falling back",
		"StreamImages not implemented, falling back",
		"Evented PLEG: disabling container-termination fast path",   // GetContainerEvents, given up
		"container events stream is closed",                         // ended
		"failed to receive streaming container event",               // broken
		"GetContainerEvents failed to get streaming client",         // refused
		"received ContainerEventResponse with nil PodSandboxStatus", // an event it could not use
	} {
		for _, line := range strings.Split(kubelet, "\n") {
			if strings.Contains(line, s) {
				t.Errorf("kubelet's log: %s", line)
				break
			}
		}
	}
}

// kubeletMetrics reads kubelet's /metrics (on its read-only port): the
// value of each sample without labels, by name.
func kubeletMetrics(n *node) (map[string]float64, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", n.kubelet.ReadOnlyPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET kubelet's /metrics: %s %v", resp.Status, err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && !strings.HasPrefix(line, "#") {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				m[f[0]] = v
			}
		}
	}
	return m, nil
}
