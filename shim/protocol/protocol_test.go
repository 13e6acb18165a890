package protocol

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pier-runtime/pier/oci"
)

var update = flag.Bool("update", false, "rewrite the monitor's protocol.h")

// TestCHeader holds the monitor's protocol.h to the Go table: run "go
// generate ./shim/protocol" after changing it.
func TestCHeader(t *testing.T) {
	path := filepath.Join("..", "..", CHeaderPath)
	want := CHeader()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s is not what shim/protocol generates; run go generate ./shim/protocol\ngot:\n%s\nwant:\n%s", CHeaderPath, got, want)
	}
	// Go's %q and C agree on these strings only without escapes.
	for _, c := range cConstants {
		if s, ok := c.value.(string); ok && strings.ContainsAny(s, "\\\"\n") {
			t.Errorf("%s = %q needs escaping", c.name, s)
		}
	}
}

func TestReadExit(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadExit(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no exit file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, ExitFile), []byte(`{"v":1,"code":137,"signal":9,"oomKilled":true,"finishedAt":"2024-01-02T03:04:05.123456789Z"}`+"\n"), 0o600)
	e, err := ReadExit(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := Exit{Code: 137, Signal: 9, OOMKilled: true, FinishedAt: time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC)}
	if !e.FinishedAt.Equal(want.FinishedAt) || e.Code != want.Code || e.Signal != want.Signal || !e.OOMKilled {
		t.Errorf("got %+v, want %+v", e, want)
	}
	os.WriteFile(filepath.Join(dir, ExitFile), []byte(`{"v":2,"code":0}`), 0o600)
	if _, err := ReadExit(dir); !errors.Is(err, ErrVersion) {
		t.Errorf("version 2: %v", err)
	}
}

func TestErrorResponse(t *testing.T) {
	for _, err := range []error{oci.ErrNotFound, ErrNotRunning, ErrVersion} {
		r := ErrorResponse(err)
		if !errors.Is(&RemoteError{Msg: r.Error, Code: r.Code}, err) {
			t.Errorf("%v does not survive the trip: code %q", err, r.Code)
		}
	}
}
