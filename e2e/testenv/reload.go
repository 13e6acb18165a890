package testenv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DropIn writes (or, with empty content, removes) the drop-in file name
// of pierd's config.d.
func (p *Pierd) DropIn(name, content string) error {
	dir := filepath.Join(p.Dir, "config.d")
	if content == "" {
		err := os.Remove(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
}

// Reload sends pierd SIGHUP and waits until it has logged one more line
// containing done (its reload's outcome), at most 30 seconds.
func (p *Pierd) Reload(done string) error {
	if p.cmd == nil {
		return errors.New("pierd is not running")
	}
	before := strings.Count(p.LogText(), done)
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return err
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Count(p.LogText(), done) > before {
			return nil
		}
	}
	return errors.New("pierd did not log " + done + " after SIGHUP")
}
