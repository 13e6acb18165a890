// Package events fans the runtime's container events (a container or pod
// sandbox created, started, stopped, deleted) out to the subscribers of
// the CRI's GetContainerEvents, any number at once.
//
// The container and sandbox managers publish each event once its state
// change is recorded, from under their own locks and in the order of the
// changes: Publish never blocks and does no I/O. Each subscriber has a
// bounded buffer of its own (Buffer events). A subscriber that falls so far
// behind that its buffer is full when an event comes is dropped at once:
// it is removed from the hub, still receives the events buffered before,
// and then ErrLost, never a stream with a silent gap. Its client (kubelet)
// then lists the pods and containers again and subscribes anew. A
// subscriber that goes away (Close) is removed at once.
package events

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/sandbox"
)

// Buffer is how many events a subscriber may fall behind before it is
// dropped: kubelet reads its stream at once into a queue of 1000.
const Buffer = 1000

// ErrLost ends the events of a subscriber that fell more than its buffer
// behind: events were lost; the client must list again and subscribe anew.
var ErrLost = errors.New("events lost: the subscriber fell too far behind")

// ErrClosed ends the events of every subscriber when the hub is closed
// (pierd stops).
var ErrClosed = errors.New("no more events: pierd is stopping")

// Event is a container's or pod sandbox's change of state.
type Event struct {
	Type runtimeapi.ContainerEventType
	// ID is the container's, or, for a pod sandbox's own event, the pod's.
	ID string
	At time.Time
	// Pod is the pod's record as of the event, nil if it is gone.
	Pod *sandbox.Sandbox
	// Containers are the pod's containers as of a container's event (a
	// deleted one no longer among them); for a pod's own event, nil and
	// PodEvent true: the reader takes the pod's containers as they are.
	Containers []*container.Container
	PodEvent   bool
}

// Hub fans events out to its subscribers.
type Hub struct {
	buffer int

	mu     sync.Mutex // held only to send without blocking, never across I/O
	subs   map[*Subscription]struct{}
	closed bool
}

// NewHub returns a hub whose subscribers each buffer up to buffer events.
func NewHub(buffer int) *Hub {
	return &Hub{buffer: max(buffer, 1), subs: map[*Subscription]struct{}{}}
}

// Subscription is one subscriber's events.
type Subscription struct {
	hub  *Hub
	c    chan Event
	lost bool // set, under hub.mu, before c is closed when it overflowed
}

// Subscribe adds a subscriber. It must Close it when done.
func (h *Hub) Subscribe() *Subscription {
	s := &Subscription{hub: h, c: make(chan Event, h.buffer)}
	h.mu.Lock()
	closed := h.closed
	if closed {
		close(s.c)
	} else {
		h.subs[s] = struct{}{}
	}
	n := len(h.subs)
	h.mu.Unlock()
	if !closed {
		klog.V(2).InfoS("Container events subscriber added", "subscribers", n)
	}
	return s
}

// Close removes the subscriber; it may be called more than once.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	_, ok := h.subs[s]
	if ok {
		delete(h.subs, s)
		close(s.c)
	}
	n := len(h.subs)
	h.mu.Unlock()
	if ok {
		klog.V(2).InfoS("Container events subscriber removed", "subscribers", n)
	}
}

// Next returns the subscriber's next event. It returns ErrLost once the
// events buffered before an overflow are read, and ctx's error when ctx
// ends first.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	select {
	case e, ok := <-s.c:
		if ok {
			return e, nil
		}
		s.hub.mu.Lock()
		lost := s.lost
		s.hub.mu.Unlock()
		if lost {
			return Event{}, fmt.Errorf("%w: more than %d events were pending; list the pods and containers again and subscribe again", ErrLost, s.hub.buffer)
		}
		return Event{}, ErrClosed
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Close ends every subscriber's events (ErrClosed, once the events
// buffered are read) and any later subscriber's at once.
func (h *Hub) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		close(s.c)
	}
}

// Subscribers is how many subscribers the hub has.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Publish sends e to every subscriber without blocking; a subscriber whose
// buffer is full is dropped (ErrLost).
func (h *Hub) Publish(e Event) {
	dropped, left := 0, 0
	h.mu.Lock()
	for s := range h.subs {
		select {
		case s.c <- e:
		default:
			s.lost = true
			delete(h.subs, s)
			close(s.c)
			dropped++
		}
	}
	left = len(h.subs)
	h.mu.Unlock()
	if dropped > 0 {
		klog.InfoS("Dropped container events subscribers that fell behind: their streams end with an error", "dropped", dropped, "buffer", h.buffer, "subscribers", left)
	}
}

// ContainerEvent publishes a container's event (container.Options.OnEvent).
func (h *Hub) ContainerEvent(t runtimeapi.ContainerEventType, id string, pod *sandbox.Sandbox, containers []*container.Container) {
	h.Publish(Event{Type: t, ID: id, At: time.Now(), Pod: pod, Containers: containers})
}

// PodEvent publishes a pod sandbox's own event (sandbox.Options.OnEvent).
func (h *Hub) PodEvent(t runtimeapi.ContainerEventType, sb *sandbox.Sandbox) {
	h.Publish(Event{Type: t, ID: sb.ID, At: time.Now(), Pod: sb, PodEvent: true})
}
