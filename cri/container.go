package cri

import (
	"encoding/json"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/container"
)

func containerState(s container.State) runtimeapi.ContainerState {
	return runtimeapi.ContainerState(runtimeapi.ContainerState_value[string(s)])
}

func toContainer(c *container.Container) *runtimeapi.Container {
	cfg := c.CRIConfig()
	return &runtimeapi.Container{
		Id: c.ID, PodSandboxId: c.PodID, Metadata: cfg.GetMetadata(),
		Image: imageSpec(c), ImageRef: c.ImageRef, ImageId: c.ImageID,
		State: containerState(c.State), CreatedAt: c.CreatedAt.UnixNano(),
		Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
	}
}

func imageSpec(c *container.Container) *runtimeapi.ImageSpec {
	return &runtimeapi.ImageSpec{Image: c.ImageID, UserSpecifiedImage: c.CRIConfig().GetImage().GetImage()}
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func containerStatus(c *container.Container) *runtimeapi.ContainerStatus {
	cfg := c.CRIConfig()
	st := &runtimeapi.ContainerStatus{
		Id: c.ID, Metadata: cfg.GetMetadata(), State: containerState(c.State),
		CreatedAt: c.CreatedAt.UnixNano(), StartedAt: unixNano(c.StartedAt), FinishedAt: unixNano(c.FinishedAt),
		ExitCode: c.ExitCode, Image: imageSpec(c), ImageRef: c.ImageRef, ImageId: c.ImageID,
		Reason: c.Reason, Message: c.Message, Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
		Mounts: cfg.GetMounts(), LogPath: c.LogPath,
		User: &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{Uid: int64(c.User.UID), Gid: int64(c.User.GID), SupplementalGroups: gids(c.User)}},
	}
	return st
}

func gids(u container.User) []int64 {
	out := []int64{int64(u.GID)}
	for _, g := range u.AdditionalGids {
		if int64(g) != out[0] {
			out = append(out, int64(g))
		}
	}
	return out
}

func containerVerboseInfo(c *container.Container) (map[string]string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return map[string]string{"info": string(b)}, nil
}
