package main

import (
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cri"
	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/metrics"
)

// observers are the hooks pierd gives the packages whose events package
// metrics counts: all nil when metrics are off, so that they cost nothing.
type observers struct {
	cfg  metrics.Config
	m    *metrics.Metrics
	cri  cri.Observer
	pull func(image.PullStats)
	exit func(reason string)
}

func newObservers(cfg metrics.Config) *observers {
	if !cfg.Enabled() {
		return &observers{}
	}
	m := metrics.New(metrics.Options{Version: version})
	return &observers{cfg: cfg, m: m, cri: m.ObserveCRI, pull: m.ObservePull, exit: m.ObserveExit}
}

// serve serves /metrics, if enabled, until the returned func is called.
func (o *observers) serve(containers metrics.Containers, pods metrics.Pods) (stop func(), err error) {
	if o.m == nil {
		return func() {}, nil
	}
	o.m.AddCensus(containers, pods)
	srv, err := metrics.Listen(o.cfg, o.m)
	if err != nil {
		return nil, err
	}
	go func() {
		if err := srv.Serve(); err != nil {
			klog.ErrorS(err, "Metrics server stopped")
		}
	}()
	klog.InfoS("Serving metrics", "address", "http://"+srv.Addr()+"/metrics")
	return func() { srv.Close() }, nil
}
