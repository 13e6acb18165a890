package events

import (
	"context"
	"errors"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/sandbox"
)

func next(t *testing.T, s *Subscription) (Event, error) {
	t.Helper()
	return s.Next(context.Background())
}

// Every subscriber gets every event, in order.
func TestFanOut(t *testing.T) {
	h := NewHub(8)
	a, b := h.Subscribe(), h.Subscribe()
	defer a.Close()
	defer b.Close()
	pod := &sandbox.Sandbox{ID: "p"}
	h.PodEvent(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, pod)
	h.ContainerEvent(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, "c", pod, nil)
	for _, s := range []*Subscription{a, b} {
		e, err := next(t, s)
		if err != nil || e.Type != runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT || e.ID != "p" || !e.PodEvent || e.Pod != pod {
			t.Fatalf("first event %+v, %v; want the pod's created", e, err)
		}
		e, err = next(t, s)
		if err != nil || e.Type != runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT || e.ID != "c" || e.PodEvent || e.At.IsZero() {
			t.Fatalf("second event %+v, %v; want the container's stopped", e, err)
		}
	}
}

// A subscriber that falls behind by more than its buffer is dropped: it
// reads what was buffered, then ErrLost; the others are not affected.
func TestOverflow(t *testing.T) {
	h := NewHub(3)
	slow, fast := h.Subscribe(), h.Subscribe()
	defer slow.Close()
	defer fast.Close()
	for i := range 5 {
		h.Publish(Event{ID: string(rune('a' + i))})
		if e, err := next(t, fast); err != nil || e.ID != string(rune('a'+i)) {
			t.Fatalf("fast subscriber: event %d is %+v, %v", i, e, err)
		}
	}
	if n := h.Subscribers(); n != 1 {
		t.Errorf("%d subscribers after the slow one overflowed, want 1", n)
	}
	for i := range 3 {
		if e, err := next(t, slow); err != nil || e.ID != string(rune('a'+i)) {
			t.Fatalf("slow subscriber: buffered event %d is %+v, %v", i, e, err)
		}
	}
	if _, err := next(t, slow); !errors.Is(err, ErrLost) {
		t.Fatalf("slow subscriber after its buffer: %v, want ErrLost", err)
	}
	slow.Close() // after the hub dropped it: no double close
}

// A subscriber that goes away is removed at once; Close may come twice.
func TestClose(t *testing.T) {
	h := NewHub(1)
	s := h.Subscribe()
	s.Close()
	s.Close()
	if n := h.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers after Close, want 0", n)
	}
	h.Publish(Event{}) // must not send to it, nor panic
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s2 := h.Subscribe()
	defer s2.Close()
	if _, err := s2.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next with an ended context: %v, want context.Canceled", err)
	}
}

// Closing the hub ends every stream, and any later one at once.
func TestHubClose(t *testing.T) {
	h := NewHub(4)
	s := h.Subscribe()
	defer s.Close()
	h.Publish(Event{ID: "x"})
	h.Close()
	if e, err := next(t, s); err != nil || e.ID != "x" {
		t.Fatalf("event buffered before Close: %+v, %v", e, err)
	}
	if _, err := next(t, s); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	late := h.Subscribe()
	defer late.Close()
	if _, err := next(t, late); !errors.Is(err, ErrClosed) {
		t.Fatalf("subscriber after Close: %v, want ErrClosed", err)
	}
	h.Publish(Event{}) // no subscribers, no panic
}

// Publish never blocks, however many events no one reads.
func BenchmarkPublishIdleSubscribers(b *testing.B) {
	h := NewHub(Buffer)
	for range 4 {
		defer h.Subscribe().Close()
	}
	for b.Loop() {
		h.Publish(Event{})
	}
}
