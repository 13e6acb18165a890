package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/klog/v2"
)

// Config is pierd's [metrics] table.
type Config struct {
	// Address is where /metrics is served, host:port; "" (the default)
	// serves none.
	Address string `toml:"address"`
	// AllowNonLoopback lets Address be other than a loopback address.
	// /metrics has no authentication and no TLS: by default pierd refuses
	// to serve it beyond the node.
	AllowNonLoopback bool `toml:"allow_non_loopback"`
}

// Enabled reports whether metrics are served.
func (c Config) Enabled() bool { return c.Address != "" }

// Validate checks the address: host:port, with a loopback host
// (127.0.0.0/8, ::1, localhost) unless AllowNonLoopback.
func (c Config) Validate() error {
	if c.Address == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(c.Address)
	if err != nil {
		return fmt.Errorf("[metrics] address %q: want host:port, such as 127.0.0.1:9091: %v", c.Address, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("[metrics] address %q: port %q is not a port number", c.Address, port)
	}
	if c.AllowNonLoopback || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("[metrics] address %q is not on a loopback address: /metrics has no authentication; "+
			"use 127.0.0.1:<port>, or set allow_non_loopback = true to serve it there", c.Address)
	}
	return nil
}

// Server serves /metrics over HTTP.
type Server struct {
	lis net.Listener
	srv *http.Server
}

// Listen listens on cfg.Address for m's /metrics (Serve serves it).
func Listen(cfg Config, m *Metrics) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		// One scrape at a time is plenty; more wait, then get 503.
		MaxRequestsInFlight: 2,
		Timeout:             10 * time.Second,
		ErrorLog:            klogPrinter{},
	}))
	return &Server{lis: lis, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
	}}, nil
}

// Addr is the address the server listens on (with the port chosen, for
// port 0).
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Serve serves until Close.
func (s *Server) Serve() error {
	if err := s.srv.Serve(s.lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

type klogPrinter struct{}

func (klogPrinter) Println(v ...any) { klog.ErrorS(nil, "Metrics: "+fmt.Sprint(v...)) }
