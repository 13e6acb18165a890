// Package privdir makes the directories that hold what pier keeps of a
// container, a pod or an image so that no other user of the node can reach
// what is inside: a setuid-root file or a device node that a container made
// in its writable layer, a record that holds secrets. A local user who could
// pass through such a directory could run that file as root on the host
// (as CVE-2021-41091 allowed in moby); so each per-object directory is
// Private (0700), and the roots above them are Passable (0711): anyone may
// pass through them, no one else may list them.
//
// A directory that one other identity must pass through (the runtime's init
// of a user-namespaced container runs as a mapped host uid and reaches its
// root file system through the bundle) is opened to exactly one group with
// Share: mode 0710, group gid. Nothing else gets in.
package privdir

import (
	"fmt"
	"os"
)

// Modes of pier's directories.
const (
	// Private: root's alone. Every per-container, per-pod and per-image
	// directory, and whatever holds layers.
	Private os.FileMode = 0o700
	// Passable: anyone may pass through to a directory inside whose name
	// they know; no one else may list it. The roots of pier's state, so
	// that a Private directory in them can be Shared.
	Passable os.FileMode = 0o711
	// shared is what Share gives a directory: its group may pass through.
	shared os.FileMode = 0o710
)

// Make makes dir, and any missing parent, with mode. An existing directory
// is narrowed to mode (its permissions and mode's in common): an older pier
// made its container directories 0711, and an administrator's narrower mode
// stays. Make undoes Share: share again after it.
func Make(dir string, mode os.FileMode) error {
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	// MkdirAll's mode is masked by the umask; so is nothing else here.
	if perm := fi.Mode().Perm(); perm != perm&mode || fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky) != 0 {
		return os.Chmod(dir, perm&mode)
	}
	return nil
}

// Share opens the Private directory dir to exactly one group besides root:
// its members may pass through it (mode 0710, group gid), not list it.
func Share(dir string, gid int) error {
	if err := os.Chown(dir, 0, gid); err != nil {
		return err
	}
	return os.Chmod(dir, shared)
}
