package kubelet

import (
	"strings"
	"testing"
)

// checkEventsAndStreaming checks that kubelet, with the EventedPLEG and
// CRIListStreaming feature gates, used pier's container events and list
// streams for the whole run so far (it runs before pierd is restarted):
// one GetContainerEvents subscriber from before the first pod ran, never
// dropped nor ended; StreamPodSandboxes, StreamContainers and StreamImages
// answered, never failed; and kubelet never fell back to the unary lists
// nor gave up its event stream.
func checkEventsAndStreaming(t *testing.T, n *node) {
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
		"not implemented, falling back to",                          // a Stream* list RPC
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
