package container

import (
	"fmt"
	"os"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/sandbox"
	"github.com/pier-runtime/pier/shim/protocol"
)

// Each recorded end of a container is published as STOPPED once recorded,
// with its pod's containers as of then; an exit recorded while its
// StartContainer still runs is left to Start (which publishes STARTED
// first).
func TestPublishExits(t *testing.T) {
	var seen []string
	m := &Manager{
		containers: map[string]*Container{},
		live:       map[string]*live{},
	}
	m.opts = Options{Root: t.TempDir(), OnEvent: func(typ runtimeapi.ContainerEventType, id string, pod *sandbox.Sandbox, cs []*Container) {
		states := ""
		for _, c := range cs {
			states += " " + c.ID + "=" + string(c.State)
		}
		seen = append(seen, fmt.Sprintf("%v %s:%s", typ, id, states))
	}}
	now := time.Now()
	for i, id := range []string{"exits", "lost", "gone", "starting"} {
		if err := os.Mkdir(m.dir(id), 0o700); err != nil {
			t.Fatal(err)
		}
		m.containers[id] = &Container{Version: recordVersion, ID: id, PodID: "pod", State: Running, StartedAt: now, CreatedAt: now.Add(time.Duration(i))}
		m.live[id] = newLive()
	}
	m.containers["other"] = &Container{ID: "other", PodID: "another pod", State: Running}
	m.containers["starting"].State, m.containers["starting"].StartedAt = Created, time.Time{}
	m.live["starting"].starting = true

	m.recordExit(m.containers["exits"], &protocol.Exit{Code: 1, FinishedAt: now})
	m.recordLostExit(m.containers["lost"], "lost")
	m.shimGone(m.containers["gone"], fmt.Errorf("killed")) // no exit file: Unknown
	m.recordExit(m.containers["starting"], &protocol.Exit{Code: 0, FinishedAt: now})
	want := []string{
		"CONTAINER_STOPPED_EVENT exits: exits=CONTAINER_EXITED lost=CONTAINER_RUNNING gone=CONTAINER_RUNNING starting=CONTAINER_CREATED",
		"CONTAINER_STOPPED_EVENT lost: exits=CONTAINER_EXITED lost=CONTAINER_EXITED gone=CONTAINER_RUNNING starting=CONTAINER_CREATED",
		"CONTAINER_STOPPED_EVENT gone: exits=CONTAINER_EXITED lost=CONTAINER_EXITED gone=CONTAINER_UNKNOWN starting=CONTAINER_CREATED",
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("events\n%v\nwant\n%v", seen, want)
	}
}
