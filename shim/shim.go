// Package shim is pier's per-container shim, pier-shim, and pierd's client of
// it.
//
// pierd starts one pier-shim per container (Start) in a session of its own,
// so that the shim outlives pierd restarts and upgrades. The shim is the
// child subreaper of the container's processes: it runs the OCI runtime's
// create, reports the result over an inherited pipe (the handshake), then
// execs pier-shim-monitor (cmd/pier-shim-monitor, C) in its place: same pid,
// session and subreaper flag, and the control socket, output pipes (or pty
// master), stdin pipe and log it made. The monitor serves a tiny versioned
// control protocol on the unix socket: start, kill, state, wait, exec,
// reopen-log and delete, and for CRI streaming attach and exec-stream, which
// pass file descriptors so that pierd copies bytes between its clients and
// plain files. It copies the container's standard output and error (or its
// terminal's output) to the CRI log file and to attachers, and when the
// container's init exits it writes exit.json (code, signal, OOM kill, time)
// atomically before it answers anyone, so that no exit is ever lost or made
// up. It hands an exec or exec-stream request, unread, to a one-shot
// "pier-shim exec" (this package, serveExec), which runs the runtime's exec
// and answers on the connection.
//
// The split is for memory: the monitor lives as long as its container, and a
// Go process idles at about 1.5 MiB of proportional set size where the C
// monitor takes about 0.2 MiB; the work that needs the OCI spec, JSON and
// the runtime driver (create, exec) stays in Go.
//
// The same binary is the init process of pods whose containers share one
// PID namespace (StartPodInit): PID 1 of that namespace, reaping orphans.
//
// # Protocol (version 1)
//
// Handshake: Start writes the Config to <dir>/shim.json and runs
// "pier-shim serve <dir>" in a new session with a pipe on fd 3. Once the
// runtime's create has returned (and the control socket listens), the shim
// writes one line {"v":1,"pid":<init pid>} or {"v":1,"error":"<the
// runtime's message>"} and closes the pipe; after an error it has undone
// the create and exits.
//
// Control: one request per connection to the unix socket, one line of
// JSON, {"v":1,"op":"...", ...}, answered by one line {"v":1, ...} with
// "error" (and "code": "not_found", "not_running" or "version") on
// failure; then the shim closes the connection. Operations: hello, state,
// start, kill {signal, all}, wait (answered when the container has exited;
// the connection stays open until then), exec {exec: ExecRequest}
// (answered when the process has exited; a client that hangs up kills it),
// reopen-log, delete (answered before the shim exits; from then on the
// socket is gone). A request of another version is refused with code
// "version". Several connections may be open at once.
//
// File descriptors travel with a message (SCM_RIGHTS on its first byte);
// the message's "fds" field names them in order. Two operations stream,
// keeping their connection open after the answer:
//
//   - attach {attach: {stdin, stdout, stderr}}: the answer passes, as asked
//     for, "stdout" and "stderr", read ends of new pipes carrying the
//     container's output (a tty container has only stdout, its terminal's
//     output, and always passes "pty", a duplicate of the pty master, for
//     resizing);
//     "stdin", when asked for and the container's stdin is open (Config.Stdin),
//     is a duplicate of its stdin pipe's write end or of the pty master.
//     The shim writes each chunk of output to the log and to every attacher
//     without waiting: its pipes are non-blocking, and an attacher whose
//     pipe is full loses the chunk. An attachment ends when the client
//     hangs up or the container has exited (the output pipes end with the
//     container's output); with Config.StdinOnce, the end of one that had
//     stdin closes the container's stdin (a terminal cannot be closed
//     while its output is read: the shim types its end-of-file character,
//     ^D, which ends the input of a program reading it line by line). An exited container is refused (not_running).
//   - exec-stream {exec, tty, width, height, fds}: the request passes the
//     process's "stdin", "stdout" and "stderr" (each /dev/null when
//     absent; ignored with tty), which the shim closes once the process
//     runs. The first answer, {pid, fds: ["pty"] with tty}, comes once the
//     process runs; the second, {exec: {exitCode}}, when it has exited. A
//     client that hangs up, or shuts down its writing side, before that has
//     the process killed (SIGKILL).
//
// The shim binary is small on purpose: no gRPC, no klog, few goroutines, a
// small heap.
package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pier-runtime/pier/oci"
)

// ProtocolVersion is the version of the handshake, the control protocol,
// shim.json and exit.json. A shim refuses requests of another version.
const ProtocolVersion = 1

// Files in a shim's directory.
const (
	configFile = "shim.json" // Config, written by Start
	exitFile   = "exit.json" // Exit, written by the shim when the container exits
	logFile    = "shim.log"  // the shim's own standard output and error
)

// Sentinel errors of the client.
var (
	// ErrUnavailable: the shim cannot be reached, or the connection to it
	// broke before it answered (it died or was killed).
	ErrUnavailable = errors.New("shim unavailable")
	// ErrNotRunning: the container has exited (Kill, Exec, Start).
	ErrNotRunning = errors.New("container is not running")
	// ErrVersion: the shim speaks another protocol version.
	ErrVersion = errors.New("unsupported shim protocol version")
)

// Config is what pierd hands a new shim: Start writes it as JSON to
// <Dir>/shim.json and starts the binary with that directory.
type Config struct {
	Version int         `json:"v"`
	ID      string      `json:"id"`      // container id
	Bundle  string      `json:"bundle"`  // OCI bundle: config.json and the mounted rootfs
	Runtime oci.Runtime `json:"runtime"` // the OCI runtime for this container
	Dir     string      `json:"dir"`     // the shim's own state dir: shim.json, exit.json, shim.log
	Socket  string      `json:"socket"`  // control socket path, under the 108-byte limit
	LogPath string      `json:"logPath"` // CRI log file of the container; "" discards the output
	// LogDir is the pod's log directory: the shim opens LogPath (at every
	// reopen too) beneath it, never following a symbolic link (package
	// beneath). "" (a shim.json of an older pierd) is LogPath's directory.
	LogDir string `json:"logDir,omitempty"`

	// From the CRI container config. Tty: the container's stdio is a
	// terminal (the bundle's process.terminal is set). Stdin: its standard
	// input stays open for attachers (else it is /dev/null); StdinOnce: the
	// shim closes it when the first attachment with stdin ends.
	Tty       bool `json:"tty,omitempty"`
	Stdin     bool `json:"stdin,omitempty"`
	StdinOnce bool `json:"stdinOnce,omitempty"`
}

// Status values of State.
const (
	StatusCreated = "created"
	StatusRunning = "running"
	StatusExited  = "exited"
)

// State is the shim's view of its container.
type State struct {
	Status    string    `json:"status"` // StatusCreated, StatusRunning or StatusExited
	Pid       int       `json:"pid"`    // the container's init process
	ShimPid   int       `json:"shimPid"`
	CreatedAt time.Time `json:"createdAt"`
	StartedAt time.Time `json:"startedAt,omitzero"`
	Exit      *Exit     `json:"exit,omitempty"` // set once Status is StatusExited
}

// Exit is how a container's init process ended.
type Exit struct {
	Code       int       `json:"code"`             // exit status, or 128+Signal
	Signal     int       `json:"signal,omitempty"` // the signal that killed it, or 0
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	FinishedAt time.Time `json:"finishedAt"`
}

// exitRecord is exit.json.
type exitRecord struct {
	V int `json:"v"`
	Exit
}

// ReadExit reads the exit file a shim left in dir. The error satisfies
// errors.Is(err, os.ErrNotExist) when there is none: the container has not
// exited, or its shim died before it saw the exit.
func ReadExit(dir string) (*Exit, error) {
	b, err := os.ReadFile(filepath.Join(dir, exitFile))
	if err != nil {
		return nil, err
	}
	var r exitRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, exitFile), err)
	}
	if r.V != ProtocolVersion {
		return nil, fmt.Errorf("%s: version %d: %w", filepath.Join(dir, exitFile), r.V, ErrVersion)
	}
	return &r.Exit, nil
}

// ExecRequest is a process to run in the container.
type ExecRequest struct {
	Args []string `json:"args"`
	// Env and Cwd default to the container's (the bundle's config.json).
	Env []string `json:"env,omitempty"`
	Cwd string   `json:"cwd,omitempty"`
	// The user the process runs as. Capabilities, rlimits, no_new_privs and
	// security labels are the container's.
	UID            uint32   `json:"uid"`
	GID            uint32   `json:"gid"`
	AdditionalGids []uint32 `json:"additionalGids,omitempty"`
	// Timeout kills the process (SIGKILL) after this long; 0 is none.
	Timeout time.Duration `json:"timeout,omitempty"`
}

// ExecResult is how an exec'd process ended and what it printed.
type ExecResult struct {
	ExitCode int    `json:"exitCode"` // exit status, or 128+signal
	Stdout   []byte `json:"stdout,omitempty"`
	Stderr   []byte `json:"stderr,omitempty"` // each at most 16 MiB; the rest is dropped
	TimedOut bool   `json:"timedOut,omitempty"`
}

// Operations of the control protocol.
const (
	opHello  = "hello"
	opStart  = "start"
	opKill   = "kill"
	opState  = "state"
	opWait   = "wait"
	opExec   = "exec"
	opReopen = "reopen-log"
	opDelete = "delete"

	opAttach     = "attach"
	opExecStream = "exec-stream"
)

// request is the one message a client sends on a connection, as one line
// of JSON.
type request struct {
	V      int          `json:"v"`
	Op     string       `json:"op"`
	Signal int          `json:"signal,omitempty"`
	All    bool         `json:"all,omitempty"`
	Exec   *ExecRequest `json:"exec,omitempty"` // exec, exec-stream

	Attach *AttachRequest `json:"attach,omitempty"`
	// exec-stream: a terminal, and its initial size (0: the runtime's).
	Tty    bool   `json:"tty,omitempty"`
	Width  uint16 `json:"width,omitempty"`
	Height uint16 `json:"height,omitempty"`
	// Names the file descriptors passed with the request, in order:
	// "stdin", "stdout", "stderr".
	Fds []string `json:"fds,omitempty"`
}

// response is the shim's one answer, a line of JSON; then it closes the
// connection. Code classifies an error.
type response struct {
	V     int         `json:"v"`
	Error string      `json:"error,omitempty"`
	Code  string      `json:"code,omitempty"`
	Pid   int         `json:"pid,omitempty"` // hello: the shim's pid; exec-stream: the process's
	State *State      `json:"state,omitempty"`
	Exit  *Exit       `json:"exit,omitempty"`
	Exec  *ExecResult `json:"exec,omitempty"`
	// Names the file descriptors passed with the answer, in order:
	// "pty", "stdin", "stdout", "stderr".
	Fds []string `json:"fds,omitempty"`
}

// Error codes of a response.
const (
	codeNotFound   = "not_found"   // oci.ErrNotFound
	codeNotRunning = "not_running" // ErrNotRunning
	codeVersion    = "version"     // ErrVersion
)

// handshake is the one message a new shim writes on its inherited pipe
// once the runtime's create has returned.
type handshake struct {
	V     int    `json:"v"`
	Pid   int    `json:"pid,omitempty"` // the container's init
	Error string `json:"error,omitempty"`
}

// remoteError is an error the shim reported.
type remoteError struct {
	msg, code string
}

func (e *remoteError) Error() string { return e.msg }

func (e *remoteError) Is(target error) bool {
	switch e.code {
	case codeNotFound:
		return target == oci.ErrNotFound
	case codeNotRunning:
		return target == ErrNotRunning
	case codeVersion:
		return target == ErrVersion
	}
	return false
}
