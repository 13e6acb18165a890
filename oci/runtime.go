// Package oci drives OCI runtimes (runc, crun) through their command line.
// It is the one place that runs them and reads their errors.
package oci

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// ErrNotFound reports that the runtime has no container with the given id.
var ErrNotFound = errors.New("container does not exist")

// waitDelay bounds how long a call waits for the runtime's output after the
// runtime has exited or its context is done (a process it left behind may
// still hold a pipe).
const waitDelay = 2 * time.Second

// Runtime is one OCI runtime handler: a runc-compatible binary and the
// directory where it keeps container state.
type Runtime struct {
	Name string // handler name, e.g. "runc"; prefixes every error
	Path string // binary, e.g. "runc" (looked up in PATH) or an absolute path; Name when empty
	Root string // --root state directory, e.g. /run/pier/runtime/runc; the runtime's default when empty
	// SystemdCgroup makes the runtime create each container's cgroup as a
	// systemd scope (--systemd-cgroup); its cgroupsPath is then
	// slice:prefix:name.
	SystemdCgroup bool `json:",omitempty"`
	// Features is what the runtime reported of itself (ReadFeatures), nil
	// if it could not say.
	Features *features.Features `json:"-"`
	// AllowedAnnotations are the container annotations pier copies into
	// this runtime's specs: exact keys, or prefixes ending in "*".
	AllowedAnnotations []string `json:"-"`
}

// IO is the standard input, output and error of a process the runtime
// starts; the runtime and the process share them. A nil Stdin or Stdout is
// /dev/null. A nil Stderr is a temporary file the driver reads the runtime's
// own messages from (crun writes some only there).
type IO struct {
	Stdin, Stdout, Stderr *os.File
}

// CreateOpts are the options of Create.
type CreateOpts struct {
	PidFile       string // the runtime writes the container's init pid here
	ConsoleSocket string // unix socket that receives the pty master when process.terminal is set
	NoPivot       bool   // use chroot instead of pivot_root (rootfs on ramfs)
	IO
}

// ExecOpts are the options of Exec.
type ExecOpts struct {
	PidFile       string // the runtime writes the new process's pid here
	ConsoleSocket string // unix socket that receives the pty master when p.Terminal is set
	IO
}

// State is what the runtime reports about a container.
type State struct {
	ID     string `json:"id"`
	Status string `json:"status"` // "creating", "created", "running", "paused" or "stopped"
	Pid    int    `json:"pid"`
	Bundle string `json:"bundle"`
}

// Error is a failed runtime command. Msg is the runtime's own last error
// message. errors.Is(err, ErrNotFound) holds when the container does not exist.
type Error struct {
	Runtime string // handler name
	Op      string // command, e.g. "create"
	ID      string // container id; empty for commands without one
	Msg     string
	Err     error // *exec.ExitError, the context's error, or why the runtime did not run

	notFound bool
}

func (e *Error) Error() string {
	if e.ID == "" {
		return e.Runtime + " " + e.Op + ": " + e.Msg
	}
	return e.Runtime + " " + e.Op + " " + e.ID + ": " + e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotFound) true for a missing container.
func (e *Error) Is(target error) bool { return target == ErrNotFound && e.notFound }

// Create creates container id from the bundle directory; it waits in the
// created state until Start. The runtime returns once the container's init
// process exists, so Create does not wait for the container.
func (r *Runtime) Create(ctx context.Context, id, bundle string, o CreateOpts) error {
	args := []string{"--bundle", bundle}
	if o.PidFile != "" {
		args = append(args, "--pid-file", o.PidFile)
	}
	if o.ConsoleSocket != "" {
		args = append(args, "--console-socket", o.ConsoleSocket)
	}
	if o.NoPivot {
		args = append(args, "--no-pivot")
	}
	_, err := r.run(ctx, "create", id, &o.IO, append(args, id)...)
	return err
}

// Start runs the user process of created container id.
func (r *Runtime) Start(ctx context.Context, id string) error {
	_, err := r.run(ctx, "start", id, nil, id)
	return err
}

// Kill sends sig to the init process of container id, or to all of its
// processes when all is set.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	args := []string{id, strconv.Itoa(int(sig))}
	if all {
		args = append([]string{"--all"}, args...)
	}
	_, err := r.run(ctx, "kill", id, nil, args...)
	return err
}

// Delete removes container id and its cgroup. With force it kills a
// container that is still running first (runc then sleeps 100 ms before it
// checks that the process is gone, even for a created container).
func (r *Runtime) Delete(ctx context.Context, id string, force bool) error {
	args := []string{id}
	if force {
		args = []string{"--force", id}
	}
	_, err := r.run(ctx, "delete", id, nil, args...)
	return err
}

// State returns the runtime's view of container id.
func (r *Runtime) State(ctx context.Context, id string) (*State, error) {
	out, err := r.run(ctx, "state", id, nil, id)
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, &Error{Runtime: r.Name, Op: "state", ID: id, Msg: "cannot parse output: " + err.Error(), Err: err}
	}
	return &s, nil
}

// Exec starts process p in running container id and returns once it runs
// (exec --detach). The process is not the caller's child: a caller that wants
// its exit status is a child subreaper and learns its pid from o.PidFile.
func (r *Runtime) Exec(ctx context.Context, id string, p *specs.Process, o ExecOpts) error {
	name, err := r.jsonFile("pier-oci-process-*.json", p)
	if err != nil {
		return &Error{Runtime: r.Name, Op: "exec", ID: id, Msg: err.Error(), Err: err}
	}
	defer os.Remove(name)
	args := []string{"--process", name, "--detach"}
	if o.PidFile != "" {
		args = append(args, "--pid-file", o.PidFile)
	}
	if o.ConsoleSocket != "" {
		args = append(args, "--console-socket", o.ConsoleSocket)
	}
	_, err = r.run(ctx, "exec", id, &o.IO, append(args, id)...)
	return err
}

// Update changes the cgroup limits of container id, created or running,
// to res (update --resources): the runtime leaves a limit that res leaves
// unset (nil, or 0) as it is.
func (r *Runtime) Update(ctx context.Context, id string, res *specs.LinuxResources) error {
	name, err := r.jsonFile("pier-oci-resources-*.json", res)
	if err != nil {
		return &Error{Runtime: r.Name, Op: "update", ID: id, Msg: err.Error(), Err: err}
	}
	defer os.Remove(name)
	_, err = r.run(ctx, "update", id, nil, "--resources", name, id)
	return err
}

// jsonFile writes v as JSON to a new temporary file (pattern, as
// os.CreateTemp takes it) for the runtime to read, and returns its name;
// the caller removes it.
func (r *Runtime) jsonFile(pattern string, v any) (string, error) {
	f, err := os.CreateTemp(r.tempDir(), pattern)
	if err != nil {
		return "", err
	}
	err = json.NewEncoder(f).Encode(v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// Version returns the runtime's version, e.g. "1.1.5+ds1" from the first
// line of `runc --version` ("runc version 1.1.5+ds1"), or that whole line
// when it has another form.
func (r *Runtime) Version(ctx context.Context) (string, error) {
	out, err := r.run(ctx, "--version", "", nil)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if f := strings.Fields(line); len(f) == 3 && f[1] == "version" {
		return f[2], nil
	}
	return strings.TrimSpace(line), nil
}

// tempDir is where a command's temporary files (its log, a process
// spec) go: beside the runtime's state directory, in pier's state, so that
// a pier process killed during a command leaves nothing in the node's
// temporary directory; that one when Root is the runtime's default.
func (r *Runtime) tempDir() string {
	if r.Root == "" {
		return ""
	}
	dir := filepath.Join(filepath.Dir(r.Root), "tmp")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ""
	}
	return dir
}

// Binary is the runtime's executable: Path, else Name (looked up in PATH).
func (r *Runtime) Binary() string {
	if r.Path != "" {
		return r.Path
	}
	return r.Name
}

// run runs the runtime's command op with args and returns its standard
// output. With stdio nil, output and error are captured (the command starts
// no process); otherwise the runtime and the process it starts get stdio.
// A failure becomes an *Error carrying the runtime's last error message,
// taken from its JSON log or, failing that, its standard error.
func (r *Runtime) run(ctx context.Context, op, id string, stdio *IO, args ...string) ([]byte, error) {
	fail := func(msg string, err error) error {
		return &Error{Runtime: r.Name, Op: op, ID: id, Msg: msg, Err: err}
	}
	var full []string
	var logPath string
	if op != "--version" {
		logFile, err := os.CreateTemp(r.tempDir(), "pier-oci-*.log")
		if err != nil {
			return nil, fail(err.Error(), err)
		}
		logPath = logFile.Name()
		logFile.Close()
		defer os.Remove(logPath)
		if r.Root != "" {
			full = append(full, "--root", r.Root)
		}
		if r.SystemdCgroup {
			full = append(full, "--systemd-cgroup")
		}
		full = append(full, "--log", logPath, "--log-format", "json")
	}
	full = append(full, op)
	full = append(full, args...)

	cmd := exec.CommandContext(ctx, r.Binary(), full...)
	cmd.Env = runtimeEnv(os.Environ())
	// Its own process group: a terminal's signals do not reach it, and a
	// cancelled context kills whatever it started that is still in the group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay

	var stdout, stderr bytes.Buffer
	var stderrFile *os.File
	if stdio == nil {
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
	} else {
		// Files, never pipes: the container inherits them, and a pipe
		// would keep Wait busy for as long as the container lives.
		if stdio.Stdin != nil {
			cmd.Stdin = stdio.Stdin
		}
		if stdio.Stdout != nil {
			cmd.Stdout = stdio.Stdout
		}
		if stdio.Stderr != nil {
			cmd.Stderr = stdio.Stderr
		} else {
			f, err := os.CreateTemp(r.tempDir(), "pier-oci-*.stderr")
			if err != nil {
				return nil, fail(err.Error(), err)
			}
			defer os.Remove(f.Name())
			defer f.Close()
			cmd.Stderr, stderrFile = f, f
		}
	}

	runErr := cmd.Run()
	if runErr == nil {
		return stdout.Bytes(), nil
	}
	var logData []byte
	if logPath != "" {
		logData, _ = os.ReadFile(logPath)
	}
	if stderrFile != nil {
		if b, err := os.ReadFile(stderrFile.Name()); err == nil {
			stderr.Write(b)
		}
	}
	msg := lastMessage(logData, stderr.Bytes())
	msg = trimFailedPrefix(msg, op)
	if ctx.Err() != nil {
		runErr = ctx.Err()
	}
	if msg == "" {
		msg = runErr.Error()
	}
	e := &Error{Runtime: r.Name, Op: op, ID: id, Msg: msg, Err: runErr}
	e.notFound = id != "" && op != "create" && isNotFound(msg, id)
	return nil, e
}

// runtimeEnv is the environment a runtime command gets: the caller's,
// without what systemd hands its service. runc and crun forward the
// notifications of a container (systemd in a container) when they find
// NOTIFY_SOCKET: with pierd's, "runc start" looks for a forwarding socket
// its create never made (pier-shim runs create without it) and fails.
func runtimeEnv(env []string) []string {
	out := env[:0:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "NOTIFY_SOCKET", strings.HasPrefix(k, "WATCHDOG_"), strings.HasPrefix(k, "LISTEN_"):
			continue
		}
		out = append(out, kv)
	}
	return out
}

// lastMessage picks the runtime's own error message: the last error-level
// entry of its JSON log (runc and crun both write
// {"level":"error","msg":"...","time":"..."} lines), else the last line of
// its standard error, else the last message of any level in the log.
func lastMessage(log, stderr []byte) string {
	var lastErr, lastAny string
	for _, line := range bytes.Split(log, []byte("\n")) {
		var entry struct{ Level, Msg string }
		if json.Unmarshal(line, &entry) != nil || entry.Msg == "" {
			continue
		}
		switch entry.Level {
		case "error", "fatal", "panic":
			lastErr = entry.Msg
		}
		lastAny = entry.Msg
	}
	if lastErr != "" {
		return strings.TrimSpace(lastErr)
	}
	lines := strings.Split(strings.TrimSpace(string(stderr)), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		return last
	}
	return strings.TrimSpace(lastAny)
}

// trimFailedPrefix drops runc's "runc create failed: " from a message that
// already gets "runc create <id>: " in front.
func trimFailedPrefix(msg, op string) string {
	mark := " " + op + " failed: "
	i := strings.Index(msg, mark)
	if i <= 0 || strings.ContainsAny(msg[:i], " \t") {
		return msg
	}
	return msg[i+len(mark):]
}

// isNotFound tells from a runtime's message that container id does not
// exist. runc says "container does not exist"; crun fails to open the
// container's state, e.g. "error opening file `/run/crun/<id>/status`: No
// such file or directory" or "cannot open directory '/run/crun/<id>': No
// such file or directory".
func isNotFound(msg, id string) bool {
	if strings.Contains(msg, "container does not exist") {
		return true
	}
	if !strings.HasSuffix(msg, "No such file or directory") {
		return false
	}
	// The path names the container: "/<id>" followed by a separator, a
	// quote or the end, not a longer id.
	for rest := msg; ; {
		i := strings.Index(rest, "/"+id)
		if i < 0 {
			return false
		}
		rest = rest[i+1+len(id):]
		if rest == "" || strings.IndexByte("/'`\"", rest[0]) >= 0 {
			return true
		}
	}
}
