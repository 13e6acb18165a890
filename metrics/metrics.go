// Package metrics is pierd's Prometheus exposition: the families under the
// pier_ prefix, pierd's process and Go runtime metrics, and the /metrics
// server. It is off by default; pierd makes a Metrics and starts the server
// only when [metrics] address is set.
//
// Each fact has one owner. The packages that own them report through small
// hooks, and none of them imports Prometheus: cri's interceptor
// (cri.Observer: every request), image.Options.OnPull (every pull),
// container.Options.OnExit (every recorded exit). What is a state, not an
// event (containers and pods by state, live shims), is read from the
// managers at scrape time: nothing is kept in step with them.
package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"

	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/sandbox"
)

// Containers is what the census reads of the container manager at each
// scrape (*container.Manager).
type Containers interface {
	Census() (states map[container.State]int, shims int)
}

// Pods is what the census reads of the pod sandbox manager at each scrape
// (*sandbox.Manager).
type Pods interface {
	List(sandbox.Filter) []*sandbox.Sandbox
}

// Options configure New.
type Options struct {
	Version string // pierd's, for pier_build_info
	// NoProcess leaves out the process_* and go_* families (for tests).
	NoProcess bool
}

// Metrics holds pierd's metrics and the registry they are served from.
type Metrics struct {
	reg *prometheus.Registry

	criRequests  *prometheus.CounterVec
	criDuration  *prometheus.HistogramVec
	pullBytes    prometheus.Counter
	pullDuration prometheus.Histogram
	pullFailures *prometheus.CounterVec
	oomKills     prometheus.Counter
}

// criBuckets span a status call (a millisecond) to a slow create or stop
// (two minutes).
var criBuckets = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120}

// pullBuckets span a pull of layers already stored to a large image.
var pullBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// New makes pierd's metrics and registers them. AddCensus adds the
// families read from the managers.
func New(opts Options) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		criRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pier_cri_requests_total",
			Help: "CRI requests answered, by method and gRPC code.",
		}, []string{"method", "code"}),
		criDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pier_cri_request_duration_seconds",
			Help:    "Time to answer a CRI request, by method.",
			Buckets: criBuckets,
		}, []string{"method"}),
		pullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pier_image_pull_bytes_total",
			Help: "Layer bytes fetched from registries (compressed, as sent), failed pulls included; layers already stored are not fetched.",
		}),
		pullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pier_image_pull_duration_seconds",
			Help:    "Time a successful image pull took, every endpoint tried.",
			Buckets: pullBuckets,
		}),
		pullFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pier_image_pull_failures_total",
			Help: "Image pulls that failed, by reason.",
		}, []string{"reason"}),
		oomKills: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pier_container_oom_kills_total",
			Help: "Container exits recorded as OOMKilled (the kernel's OOM killer ended a process of the container's cgroup).",
		}),
	}
	for _, r := range image.FailureReasons() {
		m.pullFailures.WithLabelValues(r) // every reason, at 0
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "pier_build_info",
		Help:        "pierd's version, as a label; the value is 1.",
		ConstLabels: prometheus.Labels{"version": opts.Version},
	})
	build.Set(1)
	m.reg.MustRegister(m.criRequests, m.criDuration, m.pullBytes, m.pullDuration, m.pullFailures, m.oomKills, build)
	if !opts.NoProcess {
		m.reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	}
	return m
}

// AddCensus adds pier_containers, pier_shims and pier_pods, read from
// containers and pods at each scrape. Call it once, before serving.
func (m *Metrics) AddCensus(containers Containers, pods Pods) {
	m.reg.MustRegister(&census{containers: containers, pods: pods})
}

// Registry is the registry the metrics are served from.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveCRI counts a CRI request (a cri.Observer). fullMethod is gRPC's,
// "/runtime.v1.RuntimeService/Version"; the label is its last part.
func (m *Metrics) ObserveCRI(fullMethod string, code codes.Code, d time.Duration) {
	method := fullMethod[strings.LastIndexByte(fullMethod, '/')+1:]
	m.criRequests.WithLabelValues(method, code.String()).Inc()
	m.criDuration.WithLabelValues(method).Observe(d.Seconds())
}

// ObservePull counts an image pull (image.Options.OnPull).
func (m *Metrics) ObservePull(s image.PullStats) {
	m.pullBytes.Add(float64(s.Bytes))
	if s.Err != nil {
		m.pullFailures.WithLabelValues(image.FailureReason(s.Err)).Inc()
		return
	}
	m.pullDuration.Observe(s.Duration.Seconds())
}

// ObserveExit counts a container's recorded exit by its reason
// (container.Options.OnExit).
func (m *Metrics) ObserveExit(reason string) {
	if reason == "OOMKilled" {
		m.oomKills.Inc()
	}
}

// census reads the managers at scrape time.
type census struct {
	containers Containers
	pods       Pods
}

var (
	containersDesc = prometheus.NewDesc("pier_containers", "Containers pier holds, by state.", []string{"state"}, nil)
	podsDesc       = prometheus.NewDesc("pier_pods", "Pod sandboxes pier holds, by state.", []string{"state"}, nil)
	shimsDesc      = prometheus.NewDesc("pier_shims", "Containers whose pier-shim monitor pierd follows (started or reconnected to, not yet deleted or lost).", nil, nil)

	containerStates = []struct {
		state container.State
		label string
	}{{container.Created, "created"}, {container.Running, "running"}, {container.Exited, "exited"}, {container.Unknown, "unknown"}}
	podStates = []struct {
		state sandbox.State
		label string
	}{{sandbox.Ready, "ready"}, {sandbox.NotReady, "notready"}}
)

func (c *census) Describe(ch chan<- *prometheus.Desc) {
	ch <- containersDesc
	ch <- podsDesc
	ch <- shimsDesc
}

func (c *census) Collect(ch chan<- prometheus.Metric) {
	if c.containers != nil {
		states, shims := c.containers.Census()
		for _, s := range containerStates {
			ch <- prometheus.MustNewConstMetric(containersDesc, prometheus.GaugeValue, float64(states[s.state]), s.label)
		}
		ch <- prometheus.MustNewConstMetric(shimsDesc, prometheus.GaugeValue, float64(shims))
	}
	if c.pods != nil {
		counts := map[sandbox.State]int{}
		for _, p := range c.pods.List(sandbox.Filter{}) {
			counts[p.State]++
		}
		for _, s := range podStates {
			ch <- prometheus.MustNewConstMetric(podsDesc, prometheus.GaugeValue, float64(counts[s.state]), s.label)
		}
	}
}
