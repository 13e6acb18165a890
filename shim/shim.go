// Package shim is pierd's side of pier-shim, the per-container shim: it
// starts a shim (Start), which runs the OCI runtime's create and then
// becomes pier-shim-monitor (C) for the container's life, and talks to a
// running one over its control socket (Client): state, started, wait,
// exec, attach, exec-stream, reopen-log and delete. The wire format and
// the shim's files are package protocol's; the shim's Go program is
// package shim/server. pierd runs the runtime's other commands (start,
// kill, delete, state) itself, through package oci: the monitor only
// supervises, so that it always answers at once.
//
// A shim outlives pierd restarts and upgrades: pierd reconnects to it
// (Connect), or reads the exit file it left (protocol.ReadExit).
package shim

import (
	"errors"

	"github.com/pier-runtime/pier/shim/protocol"
)

// Sentinel errors of the client.
var (
	// ErrUnavailable: the shim cannot be reached, or the connection to it
	// broke before it answered (it died or was killed).
	ErrUnavailable = errors.New("shim unavailable")
	// ErrNotRunning: the container has exited (Exec, Attach).
	ErrNotRunning = protocol.ErrNotRunning
	// ErrVersion: the shim speaks another protocol version.
	ErrVersion = protocol.ErrVersion
)
