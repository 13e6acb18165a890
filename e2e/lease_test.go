package e2e

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCreateRacesRemoveImage: kubelet's image GC may remove an image while
// a CreateContainer of it runs. The create either fails with NotFound, or
// makes a container whose layers stay until it is removed: it starts and
// runs, although its image is gone.
func TestCreateRacesRemoveImage(t *testing.T) {
	p := startPierd(t, network.Config())
	podID, pod := podWithLogs(t, p, "lease")
	ref := reg.Ref(busyboxImg)
	made, refused := 0, 0
	const rounds = 30
	for i := 0; i < rounds; i++ {
		mustPull(t, p, ref)
		removed := make(chan error, 1)
		go func() {
			// Sweep the removal across the create's first milliseconds.
			time.Sleep(time.Duration(i) * 200 * time.Microsecond)
			_, err := p.Images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
			removed <- err
		}()
		cfg := containerConfig(fmt.Sprintf("c%d", i), "true")
		resp, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if err := <-removed; err != nil {
			t.Fatalf("RemoveImage: %v", err)
		}
		if err != nil {
			if status.Code(err) != codes.NotFound {
				t.Fatalf("CreateContainer racing RemoveImage: %v, want NotFound or a container", err)
			}
			refused++
			continue
		}
		made++
		// Its image may be gone now; its layers are not.
		if _, err := p.Runtime.StartContainer(ctx(t), &runtimeapi.StartContainerRequest{ContainerId: resp.ContainerId}); err != nil {
			t.Fatalf("StartContainer of a container made while its image was removed: %v", err)
		}
		if st := waitState(t, p, resp.ContainerId, runtimeapi.ContainerState_CONTAINER_EXITED); st.ExitCode != 0 {
			t.Fatalf("container made while its image was removed: exit %d %s", st.ExitCode, st.Message)
		}
		if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: resp.ContainerId}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d races: %d containers made and run, %d creates refused with NotFound", rounds, made, refused)
	assertNoPartialLayer(t, p)
}
