// Package atomicfile writes files so that readers see either the old content
// or the new, never a mix: write a temp file beside the target, fsync it,
// rename it over the target, then fsync the directory.
//
// Records (WriteJSON) are root's alone, mode 0600: they may hold what the
// CRI sent, environment values (Kubernetes Secrets) included.
package atomicfile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile atomically replaces path with data.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteFrom(path, bytes.NewReader(data), perm)
}

// WriteFrom atomically replaces path with what r reads, streamed (a large
// file is never held in memory).
func WriteFrom(path string, r io.Reader, perm os.FileMode) error {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := write(f, r, perm); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(dir)
}

func write(f *os.File, r io.Reader, perm os.FileMode) error {
	defer f.Close()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return f.Close()
}

// RecordMode is the mode of every record pier writes: root's alone.
const RecordMode os.FileMode = 0o600

// WriteJSON atomically replaces path with v encoded as indented JSON, as a
// record (RecordMode).
func WriteJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(path, append(data, '\n'), RecordMode)
}

// SyncDir fsyncs a directory so that renames and creations in it are durable.
func SyncDir(dir string) error {
	if dir == "" {
		dir = "."
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
