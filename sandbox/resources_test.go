package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestUpdateResources: a pod's resources are recorded (0600) and kept
// across a restart, for a stopped pod too; an unknown pod is ErrNotFound.
func TestUpdateResources(t *testing.T) {
	m := newManager(t)
	sb, err := m.Run(context.Background(), hostPod("r"))
	if err != nil {
		t.Fatal(err)
	}
	r := PodResources{Overhead: json.RawMessage(`{"memoryLimitInBytes":"1048576"}`), Resources: json.RawMessage(`{"cpuQuota":"300000"}`)}
	if err := m.UpdateResources(sb.ID, r); err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(context.Background(), sb.ID); err != nil {
		t.Fatal(err)
	}
	r.Resources = json.RawMessage(`{"cpuQuota":"400000"}`)
	if err := m.UpdateResources(sb.ID, r); err != nil {
		t.Fatalf("a stopped pod: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(sb.Dir, "pod.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("pod record: %v %v", fi.Mode(), err)
	}
	m2, err := New(m.opts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m2.Get(sb.ID)
	if err != nil || got.Resources == nil || compact(got.Resources.Resources) != `{"cpuQuota":"400000"}` || compact(got.Resources.Overhead) != string(r.Overhead) {
		t.Fatalf("after a restart: %+v %v", got.Resources, err)
	}
	if err := m2.UpdateResources("nosuchpod", r); !errors.Is(err, ErrNotFound) {
		t.Errorf("an unknown pod: %v, want ErrNotFound", err)
	}
}

// compact is JSON without the record's indentation.
func compact(b json.RawMessage) string {
	var out bytes.Buffer
	json.Compact(&out, b)
	return out.String()
}
