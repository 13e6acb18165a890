package installer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pier-runtime/pier/internal/atomicfile"
)

// StateDir is where, on the host, the installer keeps what it did: its
// state file, its lock and the files it replaced.
const StateDir = "/var/lib/pier-install"

// state is what the installer did on the host, written after every step
// so that an installer killed at any moment resumes where it stopped. It
// is the only record of what to undo: uninstall removes exactly what is
// listed here and restores exactly what was backed up.
type state struct {
	// Done lists the steps finished, in order (install's or uninstall's,
	// as Phase says).
	Phase string   `json:"phase"` // "install" or "uninstall"
	Done  []string `json:"done,omitempty"`

	// Created lists the host paths the installer made (files and
	// directories, parents before children); Backups maps a host path it
	// replaced to the copy of the original in StateDir/backup.
	Created []string          `json:"created,omitempty"`
	Backups map[string]string `json:"backups,omitempty"`
	// DropIns lists the drop-ins of the chart it copied, to remove those
	// a later release no longer has.
	DropIns []string `json:"dropIns,omitempty"`

	// Restart: files of pier changed, so pier is restarted (kept until it
	// was, across a kill).
	Restart bool `json:"restart,omitempty"`

	// Kubelet is the kubelet's endpoints as found before the switch: what
	// uninstall restores. Nil when the kubelet was never switched.
	Kubelet *endpoints `json:"kubelet,omitempty"`
	// PreviousRuntime is the runtime the node reported before the switch
	// (e.g. "containerd://1.6.20"), what uninstall waits to see again.
	PreviousRuntime string `json:"previousRuntime,omitempty"`
}

func (s *state) done(step string) bool { return slices.Contains(s.Done, step) }

// drop forgets the steps done whose names start with one of prefixes.
func (s *state) drop(prefixes ...string) {
	s.Done = slices.DeleteFunc(s.Done, func(d string) bool {
		return slices.ContainsFunc(prefixes, func(p string) bool { return strings.HasPrefix(d, p) })
	})
}

// enter starts moving the kubelet in direction dir: progress in the other
// direction is forgotten, and when there was some, dir's own progress too
// (the kubelet may have moved since: every step runs again, idempotent).
func (s *state) enter(dir, other string) {
	if slices.ContainsFunc(s.Done, func(d string) bool { return strings.HasPrefix(d, other+"/") }) {
		s.drop(dir+"/", other+"/")
	}
}

func (s *state) created(path string) bool { return slices.Contains(s.Created, path) }

// loadState reads the state file, or returns an empty state when there
// is none.
func (h *host) loadState() (*state, error) {
	b, err := os.ReadFile(h.path(filepath.Join(StateDir, "state.json")))
	if errors.Is(err, os.ErrNotExist) {
		return &state{Backups: map[string]string{}}, nil
	}
	if err != nil {
		return nil, err
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s/state.json is damaged (%v): fix or remove it", StateDir, err)
	}
	if s.Backups == nil {
		s.Backups = map[string]string{}
	}
	return &s, nil
}

// save writes the state file atomically (mode 0600 in a 0700 directory).
func (h *host) save(s *state) error {
	if err := os.MkdirAll(h.path(StateDir), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteJSON(h.path(filepath.Join(StateDir, "state.json")), s)
}

// lock takes the installer's lock on the host, waiting for another
// installer (the pod of the previous runtime, still finishing after the
// kubelet moved to the next) to finish or die. flock is released by the
// kernel when its holder dies.
func (h *host) lock() (unlock func(), err error) {
	if err := os.MkdirAll(h.path(StateDir), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(h.path(filepath.Join(StateDir, "lock")), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		h.log("another installer holds %s/lock: waiting for it", StateDir)
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
	}
	return func() { f.Close() }, nil
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
