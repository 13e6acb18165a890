package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

const (
	evCreated = runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT
	evStarted = runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT
	evStopped = runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT
	evDeleted = runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT
)

// evSubscriber reads a GetContainerEvents stream in the background.
type evSubscriber struct {
	events chan *runtimeapi.ContainerEventResponse
	err    chan error // the stream's end
	cancel func()     // ends the stream
}

// subscribe opens a GetContainerEvents stream that is read until the test
// ends, and waits until pierd has it (a RPC answered after the stream
// opened: pierd subscribes before its handler waits).
func subscribe(t *testing.T, p *testenv.Pierd) *evSubscriber {
	t.Helper()
	c, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := p.Runtime.GetContainerEvents(c, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatalf("GetContainerEvents: %v", err)
	}
	s := &evSubscriber{events: make(chan *runtimeapi.ContainerEventResponse, 100000), err: make(chan error, 1), cancel: cancel}
	go func() {
		for {
			e, err := stream.Recv()
			if err != nil {
				s.err <- err
				return
			}
			s.events <- e
		}
	}()
	waitSubscribers(t, p)
	return s
}

// waitSubscribers waits until pierd's log says it has added as many event
// subscribers as it has begun streams.
func waitSubscribers(t *testing.T, p *testenv.Pierd) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		log := p.LogText()
		added := strings.Count(log, `"Container events subscriber added"`)
		if added >= strings.Count(log, `"CRI stream" id=`) && added > 0 { // no other stream in these tests

			return
		}
		if time.Now().After(deadline) {
			t.Fatal("pierd did not log its events subscriber within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// next returns the subscriber's next event.
func (s *evSubscriber) next(t *testing.T) *runtimeapi.ContainerEventResponse {
	t.Helper()
	select {
	case e := <-s.events:
		return e
	case err := <-s.err:
		t.Fatalf("event stream ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no event within 30 s")
	}
	return nil
}

// expect reads the subscriber's next event and checks its type, id, the
// pod's state and uid, and the states of the pod's containers (by id).
func (s *evSubscriber) expect(t *testing.T, typ runtimeapi.ContainerEventType, id, podUID string, pod runtimeapi.PodSandboxState, containers map[string]runtimeapi.ContainerState) *runtimeapi.ContainerEventResponse {
	t.Helper()
	e := s.next(t)
	if e.ContainerEventType != typ || e.ContainerId != id {
		t.Fatalf("event %v of %s, want %v of %s", e.ContainerEventType, e.ContainerId, typ, id)
	}
	ps := e.PodSandboxStatus
	if ps.GetMetadata().GetUid() != podUID || ps.GetState() != pod {
		t.Errorf("%v of %s: pod status %v uid %q, want %v uid %q", typ, id, ps.GetState(), ps.GetMetadata().GetUid(), pod, podUID)
	}
	got := map[string]runtimeapi.ContainerState{}
	for _, c := range e.ContainersStatuses {
		got[c.Id] = c.State
	}
	if fmt.Sprint(got) != fmt.Sprint(containers) {
		t.Errorf("%v of %s: containers %v, want %v", typ, id, got, containers)
	}
	if at := time.Unix(0, e.CreatedAt); time.Since(at) > time.Minute || time.Until(at) > time.Second {
		t.Errorf("%v of %s: created_at %v is not now", typ, id, at)
	}
	return e
}

// TestContainerEvents follows a pod and its containers through their whole
// lives on several subscribers at once: each gets every event, in order,
// with the pod's and its containers' statuses as of the event; a
// container that exits by itself and one whose shim is killed give
// STOPPED.
func TestContainerEvents(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	subs := []*evSubscriber{subscribe(t, p), subscribe(t, p), subscribe(t, p)}
	const (
		ready    = runtimeapi.PodSandboxState_SANDBOX_READY
		notReady = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
		created  = runtimeapi.ContainerState_CONTAINER_CREATED
		running  = runtimeapi.ContainerState_CONTAINER_RUNNING
		exited   = runtimeapi.ContainerState_CONTAINER_EXITED
		unknown  = runtimeapi.ContainerState_CONTAINER_UNKNOWN
	)
	type cs = map[string]runtimeapi.ContainerState
	expect := func(typ runtimeapi.ContainerEventType, id, uid string, pod runtimeapi.PodSandboxState, containers cs) []*runtimeapi.ContainerEventResponse {
		t.Helper()
		var out []*runtimeapi.ContainerEventResponse
		for _, s := range subs {
			out = append(out, s.expect(t, typ, id, uid, pod, containers))
		}
		return out
	}

	podID, pod := podWithLogs(t, p, "events")
	uid := pod.Metadata.Uid
	expect(evCreated, podID, uid, ready, cs{})
	expect(evStarted, podID, uid, ready, cs{})

	id := createContainer(t, p, podID, pod, containerConfig("sleeper", "sleep", "1000"))
	expect(evCreated, id, uid, ready, cs{id: created})
	if _, err := p.Runtime.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	expect(evStarted, id, uid, ready, cs{id: running})
	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 1}); err != nil {
		t.Fatal(err)
	}
	for _, e := range expect(evStopped, id, uid, ready, cs{id: exited}) {
		if c := e.ContainersStatuses[0]; c.ExitCode != 143 || c.FinishedAt == 0 {
			t.Errorf("STOPPED of the stopped container: exit code %d finished at %d, want 143 (SIGTERM) and a time", c.ExitCode, c.FinishedAt)
		}
	}

	// A container that exits by itself.
	quick := startContainer(t, p, podID, pod, containerConfig("quick", "sh", "-c", "sleep 0.5; exit 3"))
	expect(evCreated, quick, uid, ready, cs{id: exited, quick: created})
	expect(evStarted, quick, uid, ready, cs{id: exited, quick: running})
	for _, e := range expect(evStopped, quick, uid, ready, cs{id: exited, quick: exited}) {
		for _, c := range e.ContainersStatuses {
			if c.Id == quick && (c.ExitCode != 3 || c.Reason != "Error") {
				t.Errorf("STOPPED of the container that exited: exit code %d reason %q, want 3 Error", c.ExitCode, c.Reason)
			}
		}
	}

	// A container whose shim is killed: its exit is unknown.
	victim := startContainer(t, p, podID, pod, containerConfig("victim", "sleep", "1000"))
	expect(evCreated, victim, uid, ready, cs{id: exited, quick: exited, victim: created})
	expect(evStarted, victim, uid, ready, cs{id: exited, quick: exited, victim: running})
	if err := syscall.Kill(shimPid(t, p, victim), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	expect(evStopped, victim, uid, ready, cs{id: exited, quick: exited, victim: unknown})

	for _, c := range []string{id, quick, victim} {
		if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: c}); err != nil {
			t.Fatal(err)
		}
	}
	// The victim, Unknown, is stopped first (through the runtime).
	expect(evDeleted, id, uid, ready, cs{quick: exited, victim: unknown})
	expect(evDeleted, quick, uid, ready, cs{victim: unknown})
	expect(evStopped, victim, uid, ready, cs{victim: exited})
	expect(evDeleted, victim, uid, ready, cs{})

	if _, err := p.Runtime.StopPodSandbox(ctx(t), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	expect(evStopped, podID, uid, notReady, cs{})
	if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Fatal(err)
	}
	expect(evDeleted, podID, uid, notReady, cs{})

	for i, s := range subs {
		select {
		case e := <-s.events:
			t.Errorf("subscriber %d: an event more: %v of %s", i, e.ContainerEventType, e.ContainerId)
		default:
		}
	}

	// A subscriber that goes away is removed at once.
	subs[2].cancel()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.LogText(), `"Container events subscriber removed" subscribers=2`) {
		if time.Now().After(deadline) {
			t.Fatal("pierd did not remove a subscriber whose client went away within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// pierd ends the streams when it stops (else its graceful stop would
	// wait for them). The test's client closes its own connection first:
	// this subscriber has one of its own.
	conn, err := grpc.NewClient(p.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	last, err := runtimeapi.NewRuntimeServiceClient(conn).GetContainerEvents(ctx(t), &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, p)
	begin := time.Now()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("pierd stopped in %v with a subscriber", time.Since(begin).Round(time.Millisecond))
	if _, err := last.Recv(); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "pierd is stopping") {
		t.Errorf("subscriber's stream ended with %v, want Unavailable, pierd is stopping", err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
}

// TestContainerEventsSlowSubscriber: a subscriber that reads nothing never
// holds back the runtime (publishing does not block: every RunPodSandbox
// and RemovePodSandbox completes), nor the other subscribers; once more
// events are pending for it than its buffer holds, its stream ends with
// ResourceExhausted (it learns it lost events, and lists again), after the
// events buffered before; and it is no longer a subscriber.
func TestContainerEventsSlowSubscriber(t *testing.T) {
	p := startPierd(t, "")
	fast := subscribe(t, p)

	// The slow subscriber's connection has small flow control windows, so
	// that gRPC buffers only some 100 KiB of events for it.
	conn, err := grpc.NewClient(p.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow, err := runtimeapi.NewRuntimeServiceClient(conn).GetContainerEvents(c, &runtimeapi.GetEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, p)

	// 4 events a pod (created, started, stopped, deleted), of some 4 KiB
	// each: 400 pods make 1600, more than the 1000 pierd buffers for a
	// subscriber and the ~32 gRPC buffers.
	const pods = 400
	annotation := strings.Repeat("x", 4<<10)
	begin := time.Now()
	for i := range pods {
		cfg := hostPod(fmt.Sprintf("flood-%d", i))
		cfg.Annotations = map[string]string{"big": annotation}
		resp, err := p.Runtime.RunPodSandbox(ctx(t), &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			t.Fatalf("RunPodSandbox %d: %v", i, err)
		}
		if _, err := p.Runtime.RemovePodSandbox(ctx(t), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: resp.PodSandboxId}); err != nil {
			t.Fatalf("RemovePodSandbox %d: %v", i, err)
		}
	}
	took := time.Since(begin)
	t.Logf("%d pods run and removed in %v (%v a pod) beside a subscriber that reads nothing", pods, took.Round(time.Millisecond), (took / pods).Round(time.Microsecond))

	// The subscriber that reads gets every event, in order.
	for i := range pods * 4 {
		e := fast.next(t)
		if want := []runtimeapi.ContainerEventType{evCreated, evStarted, evStopped, evDeleted}[i%4]; e.ContainerEventType != want {
			t.Fatalf("fast subscriber: event %d is %v, want %v", i, e.ContainerEventType, want)
		}
	}
	if !strings.Contains(p.LogText(), "Dropped container events subscribers that fell behind") {
		t.Error("pierd did not log dropping the slow subscriber")
	}

	// The slow one reads what was buffered for it, in order, then the error.
	n := 0
	for {
		e, err := slow.Recv()
		if err != nil {
			if status.Code(err) != codes.ResourceExhausted || errors.Is(err, io.EOF) {
				t.Fatalf("slow subscriber's stream ended with %v, want ResourceExhausted", err)
			}
			t.Logf("slow subscriber: %d events, then %v", n, err)
			break
		}
		if want := []runtimeapi.ContainerEventType{evCreated, evStarted, evStopped, evDeleted}[n%4]; e.ContainerEventType != want {
			t.Fatalf("slow subscriber: event %d is %v, want %v", n, e.ContainerEventType, want)
		}
		n++
	}
	if n < 1000 || n >= pods*4 {
		t.Errorf("slow subscriber got %d events before the error, want its buffer's 1000 at least and fewer than all %d", n, pods*4)
	}
	if added, removed := strings.Count(p.LogText(), `"Container events subscriber added"`), strings.Count(p.LogText(), `"Container events subscriber removed"`); added != 2 || removed != 0 {
		t.Errorf("pierd logged %d subscribers added and %d removed, want 2 and 0 (the slow one is dropped, not closed)", added, removed)
	}
}

// hostPod is a pod config in the node's network (quick to run).
func hostPod(name string) *runtimeapi.PodSandboxConfig {
	cfg := podConfig(name)
	cfg.Linux.SecurityContext = &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE}}
	return cfg
}

// TestListStreaming: StreamPodSandboxes, StreamContainers and StreamImages
// return what ListPodSandbox, ListContainers and ListImages do, with the
// same filters, in pages: lists larger than a page (4 MiB) come in
// several.
func TestListStreaming(t *testing.T) {
	p := startPierd(t, "")
	mustPull(t, p, reg.Ref(busyboxImg))
	// A client that takes the 16 MiB kubelet takes (the List RPCs' answers
	// are larger than gRPC's default 4 MiB).
	conn, err := grpc.NewClient(p.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt, img := runtimeapi.NewRuntimeServiceClient(conn), runtimeapi.NewImageServiceClient(conn)

	// 6 pods and 6 containers of 900 KiB annotations each: 5.4 MiB.
	big := map[string]string{"big": strings.Repeat("y", 900<<10)}
	var podIDs []string
	for i := range 6 {
		cfg := hostPod(fmt.Sprintf("paged-%d", i))
		cfg.Annotations = big
		podIDs = append(podIDs, runPod(t, p, cfg))
	}
	pod := hostPod("paged-containers")
	pod.LogDirectory = t.TempDir()
	podID := runPod(t, p, pod)
	for i := range 6 {
		cfg := containerConfig(fmt.Sprintf("paged-%d", i), "true")
		cfg.Annotations = big
		createContainer(t, p, podID, pod, cfg)
	}

	check := func(what string, list, streamed []proto.Message, pages int, wantPages bool) {
		t.Helper()
		if len(list) != len(streamed) {
			t.Errorf("%s: %d streamed, %d listed", what, len(streamed), len(list))
			return
		}
		for i := range list {
			if !proto.Equal(list[i], streamed[i]) {
				t.Errorf("%s: item %d streamed differs from the one listed", what, i)
			}
		}
		if wantPages && pages < 2 {
			t.Errorf("%s: %d items of %d bytes came in %d page", what, len(list), totalSize(list), pages)
		}
		t.Logf("%s: %d items, %d bytes, %d pages", what, len(list), totalSize(list), pages)
	}

	c := ctx(t)
	for _, f := range []*runtimeapi.PodSandboxFilter{nil, {Id: podIDs[2]}, {LabelSelector: map[string]string{"app": "paged-1"}},
		{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}} {
		list, err := rt.ListPodSandbox(c, &runtimeapi.ListPodSandboxRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		stream, err := rt.StreamPodSandboxes(c, &runtimeapi.StreamPodSandboxesRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		got, pages := collect(t, stream, func(r *runtimeapi.StreamPodSandboxesResponse) []proto.Message { return asMessages(r.PodSandboxes) })
		check(fmt.Sprintf("pods %v", f), asMessages(list.Items), got, pages, f == nil)
	}
	for _, f := range []*runtimeapi.ContainerFilter{nil, {PodSandboxId: podID}, {PodSandboxId: podIDs[0]}, {LabelSelector: map[string]string{"container": "paged-3"}},
		{State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_CREATED}}} {
		list, err := rt.ListContainers(c, &runtimeapi.ListContainersRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		stream, err := rt.StreamContainers(c, &runtimeapi.StreamContainersRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		got, pages := collect(t, stream, func(r *runtimeapi.StreamContainersResponse) []proto.Message { return asMessages(r.Containers) })
		check(fmt.Sprintf("containers %v", f), asMessages(list.Containers), got, pages, f == nil || f.PodSandboxId == podID)
	}
	for _, f := range []*runtimeapi.ImageFilter{nil, {Image: &runtimeapi.ImageSpec{Image: reg.Ref(busyboxImg)}}, {Image: &runtimeapi.ImageSpec{Image: "none.example/absent:1"}}} {
		list, err := img.ListImages(c, &runtimeapi.ListImagesRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		stream, err := img.StreamImages(c, &runtimeapi.StreamImagesRequest{Filter: f})
		if err != nil {
			t.Fatal(err)
		}
		got, pages := collect(t, stream, func(r *runtimeapi.StreamImagesResponse) []proto.Message { return asMessages(r.Images) })
		check(fmt.Sprintf("images %v", f), asMessages(list.Images), got, pages, false)
	}
}

// collect reads a Stream* RPC's pages to its end: their items, and how
// many pages.
func collect[R any](t *testing.T, stream grpc.ServerStreamingClient[R], items func(*R) []proto.Message) ([]proto.Message, int) {
	t.Helper()
	var got []proto.Message
	pages := 0
	for {
		r, err := stream.Recv()
		if err == io.EOF {
			return got, pages
		}
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, items(r)...)
	}
}

func asMessages[T proto.Message](items []T) []proto.Message {
	out := make([]proto.Message, len(items))
	for i, it := range items {
		out[i] = it
	}
	return out
}

func totalSize(ms []proto.Message) int {
	n := 0
	for _, m := range ms {
		n += proto.Size(m)
	}
	return n
}
