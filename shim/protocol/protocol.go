// Package protocol is what pierd, pier-shim (Go) and pier-shim-monitor (C)
// say to each other, and the files they leave in a shim's directory: the
// handshake, the control protocol's messages, shim.json, exit.json, the
// error codes and the version. Package shim is pierd's side of it, package
// shim/server the pier-shim program's; the monitor's C code reads the same
// names and values from cmd/pier-shim-monitor/protocol.h, which is
// generated from the table in cheader.go (TestCHeader keeps the two in
// step).
//
// # Handshake
//
// pierd (shim.Start) writes the Config to <dir>/shim.json and runs
// "pier-shim serve <dir>" in a new session with a pipe on fd 3. Once the
// runtime's create has returned (and the control socket listens), the shim
// writes one line {"v":1,"pid":<init pid>} or {"v":1,"error":"<the
// runtime's message>"} and closes the pipe; after an error it has undone
// the create and exits. It then execs pier-shim-monitor in its place for
// the container's life.
//
// # Control (version 1)
//
// One request per connection to the unix socket, one line of JSON,
// {"v":1,"op":"...", ...} with "v" and "op" first, answered by one line
// {"v":1, ...} with "error" (and "code": "not_found", "not_running" or
// "version") on failure; then the monitor closes the connection. Several
// connections may be open at once. The monitor runs no OCI runtime
// command: pierd runs the runtime's start, kill, delete and state (package
// oci), pier-shim its create and exec.
//
//   - hello: {"pid": the monitor's pid}.
//   - state: {"state": State}.
//   - started: pierd ran the runtime's start; the monitor's status becomes
//     running and its startedAt now.
//   - wait: answered with {"exit": Exit} once the container has exited;
//     the connection stays open until then.
//   - reopen-log: the monitor opens the CRI log again (kubelet rotated it).
//   - delete: the monitor kills the container's init (SIGKILL) if it still
//     runs, records its exit, answers, removes its socket and exits. pierd
//     runs the runtime's kill --all before and its delete after.
//   - exec {exec: ExecRequest}: handed, unread, to a one-shot "pier-shim
//     exec <dir> <status>", which runs the runtime's exec and answers
//     {"exec": ExecResult} when the process has exited; a client that hangs
//     up has it killed. The helper buffers the output: pierd no longer
//     sends it (ExecSync is an exec-stream with pierd's pipes, see package
//     shim), the helper serves it for a pierd of an older pier.
//   - The exec helper (exec and exec-stream) first asks the monitor for
//     its state and joins the cgroups of the container's init.
//   - attach {attach: AttachRequest} and exec-stream {exec, tty, width,
//     height, fds}: they pass file descriptors (SCM_RIGHTS on a message's
//     first byte, named in order by its "fds" field) and keep their
//     connection open after the first answer; see package shim.
//
// Versions 1 of pier before the monitor stopped running runtime commands
// also served "start" and "kill"; pierd no longer sends them, and sends
// those monitors nothing they do not understand but "started", whose
// refusal it ignores.
package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pier-runtime/pier/oci"
)

// Version is the version of the handshake, the control protocol,
// shim.json and exit.json. A shim refuses requests of another version.
const Version = 1

// Files in a shim's directory.
const (
	ConfigFile  = "shim.json"      // Config, written by pierd
	ExitFile    = "exit.json"      // Exit, written by the monitor when the container exits
	ExitTmpFile = ".exit.json.tmp" // where the monitor writes it first
	LogFile     = "shim.log"       // the shim's own standard output and error
)

// Sentinel errors.
var (
	// ErrNotRunning: the container has exited (or, for an exec, is not
	// started).
	ErrNotRunning = errors.New("container is not running")
	// ErrVersion: the other side speaks another protocol version.
	ErrVersion = errors.New("unsupported shim protocol version")
)

// MsgExited is the monitor's error message for a request that needs a
// container that has exited.
const MsgExited = "pier-shim: the container has exited: container is not running"

// Config is what pierd hands a new shim in <Dir>/shim.json.
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

// ReadConfig reads <dir>/shim.json.
func ReadConfig(dir string) (*Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, err
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	if cfg.Version != Version {
		return nil, fmt.Errorf("%s has version %d, this shim speaks version %d: %w", filepath.Join(dir, ConfigFile), cfg.Version, Version, ErrVersion)
	}
	cfg.Dir = dir
	return &cfg, nil
}

// Status values of State.
const (
	StatusCreated = "created"
	StatusRunning = "running"
	StatusExited  = "exited"
)

// State is the monitor's view of its container.
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

// ExitRecord is exit.json.
type ExitRecord struct {
	V int `json:"v"`
	Exit
}

// ReadExit reads the exit file a monitor left in dir. The error satisfies
// errors.Is(err, os.ErrNotExist) when there is none: the container has not
// exited, or its shim died before it saw the exit.
func ReadExit(dir string) (*Exit, error) {
	b, err := os.ReadFile(filepath.Join(dir, ExitFile))
	if err != nil {
		return nil, err
	}
	var r ExitRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ExitFile), err)
	}
	if r.V != Version {
		return nil, fmt.Errorf("%s: version %d: %w", filepath.Join(dir, ExitFile), r.V, ErrVersion)
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

// MaxExecOutput is the most of each of an exec'd process's standard output
// and error that an ExecResult carries.
const MaxExecOutput = 16 << 20

// MaxRequest is the longest request line pier-shim reads (an exec's
// command line and environment).
const MaxRequest = 1 << 20

// ExecResult is how an exec'd process ended and what it printed.
type ExecResult struct {
	ExitCode int    `json:"exitCode"` // exit status, or 128+signal
	Stdout   []byte `json:"stdout,omitempty"`
	Stderr   []byte `json:"stderr,omitempty"` // each at most MaxExecOutput; the rest is dropped
	TimedOut bool   `json:"timedOut,omitempty"`
}

// AttachRequest says which of the container's streams an attachment wants.
type AttachRequest struct {
	Stdin  bool `json:"stdin,omitempty"`
	Stdout bool `json:"stdout,omitempty"`
	Stderr bool `json:"stderr,omitempty"`
}

// Operations of the control protocol.
const (
	OpHello      = "hello"
	OpState      = "state"
	OpStarted    = "started"
	OpWait       = "wait"
	OpExec       = "exec"
	OpExecStream = "exec-stream"
	OpReopenLog  = "reopen-log"
	OpDelete     = "delete"
	OpAttach     = "attach"
)

// Request is the one message a client sends on a connection, as one line
// of JSON; V and Op come first, so that the monitor learns the operation
// from the start of a long request.
type Request struct {
	V    int          `json:"v"`
	Op   string       `json:"op"`
	Exec *ExecRequest `json:"exec,omitempty"` // exec, exec-stream

	Attach *AttachRequest `json:"attach,omitempty"`
	// exec-stream: a terminal, and its initial size (0: the runtime's).
	Tty    bool   `json:"tty,omitempty"`
	Width  uint16 `json:"width,omitempty"`
	Height uint16 `json:"height,omitempty"`
	// Names the file descriptors passed with the request, in order:
	// "stdin", "stdout", "stderr".
	Fds []string `json:"fds,omitempty"`
}

// Response is an answer, a line of JSON. Code classifies an error.
type Response struct {
	V     int         `json:"v"`
	Error string      `json:"error,omitempty"`
	Code  string      `json:"code,omitempty"`
	Pid   int         `json:"pid,omitempty"` // hello: the monitor's pid; exec-stream: the process's
	State *State      `json:"state,omitempty"`
	Exit  *Exit       `json:"exit,omitempty"`
	Exec  *ExecResult `json:"exec,omitempty"`
	// Names the file descriptors passed with the answer, in order:
	// "pty", "stdin", "stdout", "stderr".
	Fds []string `json:"fds,omitempty"`
}

// Error codes of a response.
const (
	CodeNotFound   = "not_found"   // oci.ErrNotFound
	CodeNotRunning = "not_running" // ErrNotRunning
	CodeVersion    = "version"     // ErrVersion
)

// Handshake is the one message a new shim writes on its inherited pipe
// once the runtime's create has returned.
type Handshake struct {
	V     int    `json:"v"`
	Pid   int    `json:"pid,omitempty"` // the container's init
	Error string `json:"error,omitempty"`
}

// RemoteError is an error the other side reported.
type RemoteError struct {
	Msg, Code string
}

func (e *RemoteError) Error() string { return e.Msg }

// Is maps the error's code to the sentinel errors.
func (e *RemoteError) Is(target error) bool {
	switch e.Code {
	case CodeNotFound:
		return target == oci.ErrNotFound
	case CodeNotRunning:
		return target == ErrNotRunning
	case CodeVersion:
		return target == ErrVersion
	}
	return false
}

// ErrorResponse is the answer that reports err, with the code of the
// sentinel error it satisfies.
func ErrorResponse(err error) *Response {
	resp := &Response{V: Version, Error: err.Error()}
	switch {
	case errors.Is(err, oci.ErrNotFound):
		resp.Code = CodeNotFound
	case errors.Is(err, ErrNotRunning):
		resp.Code = CodeNotRunning
	case errors.Is(err, ErrVersion):
		resp.Code = CodeVersion
	}
	return resp
}
