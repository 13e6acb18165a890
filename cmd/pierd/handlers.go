package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/cri"
	"github.com/pier-runtime/pier/oci"
)

// probeHandlers tries each configured OCI runtime once, in parallel, and
// returns the handlers with the reason any of them cannot run containers
// (with the systemd cgroup driver, through systemd),
// and the runtimes of the usable ones.
func probeHandlers(cfg *Config, systemdCgroup bool) ([]cri.Handler, map[string]*oci.Runtime) {
	return probeSome(cfg, systemdCgroup, nil)
}

// probeSome is probeHandlers, but a handler found in keep is kept as it is
// rather than probed again.
func probeSome(cfg *Config, systemdCgroup bool, keep map[string]cri.Handler) ([]cri.Handler, map[string]*oci.Runtime) {
	names := make([]string, 0, len(cfg.Runtimes))
	for name := range cfg.Runtimes {
		names = append(names, name)
	}
	slices.Sort(names)
	handlers := make([]cri.Handler, len(names))
	runtimes := make([]*oci.Runtime, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		if h, ok := keep[name]; ok {
			handlers[i], runtimes[i] = h, h.Runtime
			continue
		}
		wg.Go(func() {
			start := time.Now()
			rt := &oci.Runtime{Name: name, Path: cfg.Runtimes[name].Path, Root: filepath.Join(cfg.State, "runtime", name), SystemdCgroup: systemdCgroup,
				AllowedAnnotations: cfg.Runtimes[name].AllowedAnnotations}
			work := filepath.Join(cfg.State, "probe", name)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := rt.Probe(ctx, work)
			os.RemoveAll(work)
			if err == nil {
				var ferr error
				if rt.Features, ferr = rt.ReadFeatures(ctx); ferr != nil {
					klog.V(2).InfoS("Runtime handler does not report its features; optional ones are not offered", "handler", name, "reason", ferr.Error())
				}
				runtimes[i] = rt
			}
			handlers[i] = cri.Handler{Name: name, Err: err, Runtime: runtimes[i]}
			if err != nil {
				klog.InfoS("Runtime handler cannot run containers on this node; it is not offered", "handler", name, "path", rt.Path, "reason", err.Error())
			} else {
				klog.InfoS("Runtime handler ready", "handler", name, "path", rt.Path, "probe", time.Since(start))
			}
		})
	}
	wg.Wait()
	usable := map[string]*oci.Runtime{}
	for _, rt := range runtimes {
		if rt != nil {
			usable[rt.Name] = rt
		}
	}
	return handlers, usable
}
