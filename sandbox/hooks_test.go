package sandbox

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
)

// recordingHooks records the hooks called, and what the manager showed
// while RunPod ran.
type recordingHooks struct {
	m       *Manager
	runErr  error
	mu      sync.Mutex
	calls   []string
	blocked int // Block calls not yet unblocked
	listed  bool
}

func (h *recordingHooks) Block() func() {
	h.mu.Lock()
	h.blocked++
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		h.blocked--
		h.mu.Unlock()
	}
}

func (h *recordingHooks) record(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, s)
}

func (h *recordingHooks) RunPod(_ context.Context, sb *Sandbox) error {
	h.record("run " + sb.Config.Name)
	_, err := h.m.Get(sb.ID)
	h.listed = err == nil || len(h.m.List(Filter{})) > 0
	if h.blocked != 1 {
		return errors.New("RunPod without Block held")
	}
	return h.runErr
}
func (h *recordingHooks) StopPod(_ context.Context, sb *Sandbox) { h.record("stop " + sb.Config.Name) }
func (h *recordingHooks) RemovePod(_ context.Context, sb *Sandbox) {
	h.record("remove " + sb.Config.Name)
}

// TestHooks checks when the hooks are told of a pod: RunPod before it is
// published and under Block, StopPod once however often it is stopped,
// RemovePod once; a RunPod error fails Run and leaves no pod nor files.
func TestHooks(t *testing.T) {
	m := newManager(t)
	h := &recordingHooks{m: m}
	m.opts.Hooks = h
	sb, err := m.Run(context.Background(), hostPod("a"))
	if err != nil {
		t.Fatal(err)
	}
	if h.listed {
		t.Error("the pod was visible while RunPod ran")
	}
	for range 2 {
		if err := m.Stop(context.Background(), sb.ID); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := m.Remove(context.Background(), sb.ID); err != nil {
			t.Fatal(err)
		}
	}
	h.runErr = errors.New("plugin says no")
	if _, err := m.Run(context.Background(), hostPod("b")); !errors.Is(err, h.runErr) {
		t.Fatalf("Run with a failing RunPod: %v", err)
	}
	if want := []string{"run a", "stop a", "remove a", "run b"}; !slices.Equal(h.calls, want) {
		t.Errorf("hooks called %q, want %q", h.calls, want)
	}
	if l := m.List(Filter{}); len(l) != 0 {
		t.Errorf("pods left: %v", l)
	}
	for _, d := range []string{m.opts.Root, m.opts.State} {
		if entries, _ := os.ReadDir(d); len(entries) != 0 {
			t.Errorf("%s keeps %d entries", d, len(entries))
		}
	}
	h.runErr = nil
	if _, err := m.Run(context.Background(), hostPod("b")); err != nil {
		t.Errorf("Run again after the failure: %v", err)
	}
	if h.blocked != 0 {
		t.Errorf("Block held %d times after Run returned", h.blocked)
	}
}
