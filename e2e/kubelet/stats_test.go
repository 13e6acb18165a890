package kubelet

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// statsPod burns CPU in one container (at most a fifth of a core) and, in
// another, once the check creates go in its data volume, allocates 1 MiB
// every half second, up to 40 MiB.
func statsPod() *corev1.Pod {
	burn := ctr("burn", `trap 'exit 0' TERM; while :; do :; done`)
	burn.Resources = corev1.ResourceRequirements{Limits: resources("cpu", "200m")}
	grow := ctr("grow", `trap 'exit 0' TERM; until [ -e /data/go ]; do sleep 0.2; done; `+
		`x=; i=0; while [ $i -lt 40 ]; do x="$x$(head -c 1048576 /dev/zero | tr '\0' a)"; i=$((i+1)); sleep 0.5; done; `+idle)
	grow.VolumeMounts = []corev1.VolumeMount{mount("data", "/data")}
	p := newPod("stats", burn, grow)
	p.Spec.Volumes = []corev1.Volume{emptyDir("data")}
	return p
}

// usage is the CPU and memory of a pod or container in kubelet's summary.
type usage struct {
	CPU struct {
		UsageCoreNanoSeconds uint64 `json:"usageCoreNanoSeconds"`
	} `json:"cpu"`
	Memory struct {
		WorkingSetBytes uint64 `json:"workingSetBytes"`
	} `json:"memory"`
}

// summary is the part of kubelet's /stats/summary the check reads.
type summary struct {
	Pods []struct {
		usage
		PodRef  struct{ Name string } `json:"podRef"`
		Network *struct {
			Name    string `json:"name"`
			RxBytes uint64 `json:"rxBytes"`
			TxBytes uint64 `json:"txBytes"`
		} `json:"network"`
		Containers []struct {
			usage
			Name string `json:"name"`
		} `json:"containers"`
	} `json:"pods"`
}

// podFigures are one pod's figures in the summary: the pod's CPU, memory,
// rx and tx bytes, and each container's CPU and memory by name.
type podFigures struct {
	cpu, mem, rx, tx uint64
	iface            string
	ctrCPU, ctrMem   map[string]uint64
}

func (n *node) readOnly(t *testing.T, path string) []byte {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d%s", n.kubelet.ReadOnlyPort, path))
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v: %.200s", path, resp.Status, err, b)
	}
	return b
}

func (n *node) statsOf(t *testing.T, pod string) *podFigures {
	t.Helper()
	var s summary
	if err := json.Unmarshal(n.readOnly(t, "/stats/summary"), &s); err != nil {
		t.Fatal(err)
	}
	for _, p := range s.Pods {
		if p.PodRef.Name != n.kubelet.PodName(pod) {
			continue
		}
		f := &podFigures{cpu: p.CPU.UsageCoreNanoSeconds, mem: p.Memory.WorkingSetBytes, ctrCPU: map[string]uint64{}, ctrMem: map[string]uint64{}}
		if p.Network != nil {
			f.rx, f.tx, f.iface = p.Network.RxBytes, p.Network.TxBytes, p.Network.Name
		}
		for _, c := range p.Containers {
			f.ctrCPU[c.Name], f.ctrMem[c.Name] = c.CPU.UsageCoreNanoSeconds, c.Memory.WorkingSetBytes
		}
		return f
	}
	t.Fatalf("/stats/summary has no pod %s", n.kubelet.PodName(pod))
	return nil
}

// checkStats: kubelet's /stats/summary, built from pier's CRI stats
// (PodAndContainerStatsFromCRI), shows the stats pod's CPU and memory
// growing while it burns CPU and allocates, and its eth0 counters growing
// with datagrams sent to its IP; /metrics/cadvisor shows the pod's
// families from ListPodSandboxMetrics.
func checkStats(t *testing.T, n *node) {
	p := n.waitPod(t, "stats", 2*time.Minute, running())
	time.Sleep(2 * time.Second)
	before := n.statsOf(t, "stats")
	if err := os.WriteFile(filepath.Join(n.kubelet.EmptyDir(string(p.UID), "data"), "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := testenv.SendUDP(p.Status.PodIP, 100, 1000); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	after := n.statsOf(t, "stats")
	t.Logf("stats pod: before %+v, after %+v", before, after)
	if after.cpu <= before.cpu || after.ctrCPU["burn"] <= before.ctrCPU["burn"] {
		t.Errorf("CPU did not grow while a container burns it: pod %d → %d ns, burn %d → %d ns", before.cpu, after.cpu, before.ctrCPU["burn"], after.ctrCPU["burn"])
	}
	if after.ctrMem["grow"] < before.ctrMem["grow"]+4<<20 || after.mem < before.mem+4<<20 {
		t.Errorf("working set did not grow while a container allocates 2 MiB/s: pod %d → %d, grow %d → %d bytes", before.mem, after.mem, before.ctrMem["grow"], after.ctrMem["grow"])
	}
	if after.iface != "eth0" || after.rx < before.rx+50*1000 || after.tx < before.tx {
		t.Errorf("network %s: rx %d → %d, tx %d → %d bytes, after 100 kB sent to the pod", after.iface, before.rx, after.rx, before.tx, after.tx)
	}
	metrics := string(n.readOnly(t, "/metrics/cadvisor"))
	checkStatsStreams(t, n)
	pod := `pod="` + n.kubelet.PodName("stats") + `"`
	for _, family := range []string{"container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_network_receive_bytes_total", "container_processes"} {
		found := false
		for l := range strings.Lines(metrics) {
			found = found || strings.HasPrefix(l, family+"{") && strings.Contains(l, pod)
		}
		if !found {
			t.Errorf("/metrics/cadvisor has no %s for %s", family, pod)
		}
	}
}

// checkStatsStreams: with CRIListStreaming, kubelet read the summary and
// the cadvisor metrics through pier's stats streams, which never failed,
// and never fell back to the unary lists.
func checkStatsStreams(t *testing.T, n *node) {
	pier, kubelet := n.pierd.LogText(), n.kubelet.LogText()
	for _, rpc := range []string{"StreamPodSandboxStats", "StreamPodSandboxMetrics"} {
		method := `method="/runtime.v1.RuntimeService/` + rpc + `"`
		if !strings.Contains(pier, method) {
			t.Errorf("kubelet never called %s", rpc)
		}
		for l := range strings.Lines(pier) {
			if strings.Contains(l, method) && strings.Contains(l, `"CRI request failed"`) {
				t.Errorf("%s failed: %s", rpc, l)
			}
		}
		if strings.Contains(kubelet, rpc+" not implemented, falling back") {
			t.Errorf("kubelet fell back from %s to the unary list", rpc)
		}
	}
}
