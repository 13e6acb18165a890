// Package atomicfile writes files so that readers see either the old content
// or the new, never a mix: write a temp file beside the target, fsync it,
// rename it over the target, then fsync the directory.
//
// Replace and ReplaceJSON skip both fsyncs: the replacement is still atomic
// for every reader and survives a crash of pier (the page cache holds it),
// but a crash of the node may leave the old content, or none for a new
// file. They are for files in the volatile state directory (gone at a
// reboot anyway) and for updates of a record whose previous content is
// good enough after a reboot, which ends every container and pod: a
// state change, an exit status. An fsync costs 0.3 to 15 ms on a busy disk,
// and a pod with one container wrote 22 of them.
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

// WriteFile atomically and durably replaces path with data.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return WriteFrom(path, bytes.NewReader(data), perm)
}

// WriteFrom atomically and durably replaces path with what r reads,
// streamed (a large file is never held in memory).
func WriteFrom(path string, r io.Reader, perm os.FileMode) error {
	return replace(path, r, perm, true)
}

// Replace atomically replaces path with data, without making it durable
// (see the package doc).
func Replace(path string, data []byte, perm os.FileMode) error {
	return replace(path, bytes.NewReader(data), perm, false)
}

func replace(path string, r io.Reader, perm os.FileMode, durable bool) error {
	dir, base := filepath.Split(path)
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := write(f, r, perm, durable); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if !durable {
		return nil
	}
	return SyncDir(dir)
}

func write(f *os.File, r io.Reader, perm os.FileMode, durable bool) error {
	defer f.Close()
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	if durable {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return f.Close()
}

// RecordMode is the mode of every record pier writes: root's alone.
const RecordMode os.FileMode = 0o600

// WriteJSON atomically and durably replaces path with v encoded as
// indented JSON, as a record (RecordMode).
func WriteJSON(path string, v any) error {
	data, err := record(v)
	if err != nil {
		return err
	}
	return WriteFile(path, data, RecordMode)
}

// ReplaceJSON is WriteJSON without making the record durable (see the
// package doc).
func ReplaceJSON(path string, v any) error {
	data, err := record(v)
	if err != nil {
		return err
	}
	return Replace(path, data, RecordMode)
}

func record(v any) ([]byte, error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
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
