package cri

import (
	"context"
	"encoding/json"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/container"
)

func containerState(s container.State) runtimeapi.ContainerState {
	return runtimeapi.ContainerState(runtimeapi.ContainerState_value[string(s)])
}

func toContainer(c *container.Container, defaultHandler string) *runtimeapi.Container {
	cfg := c.CRIConfig()
	return &runtimeapi.Container{
		Id: c.ID, PodSandboxId: c.PodID, Metadata: cfg.GetMetadata(),
		Image: imageSpec(c, defaultHandler), ImageRef: c.ImageRef, ImageId: c.ImageID,
		State: containerState(c.State), CreatedAt: c.CreatedAt.UnixNano(),
		Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
	}
}

// imageSpec is the container's image as kubelet's image garbage
// collection keys it with RuntimeClassInImageCriApi: the image ID and the
// pod's runtime handler, which pulled it; "" for the default handler, as
// kubelet names it and ListImages reports it.
func imageSpec(c *container.Container, defaultHandler string) *runtimeapi.ImageSpec {
	spec := &runtimeapi.ImageSpec{Image: c.ImageID, UserSpecifiedImage: c.CRIConfig().GetImage().GetImage()}
	if c.Handler != defaultHandler {
		spec.RuntimeHandler = c.Handler
	}
	return spec
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func containerStatus(c *container.Container, defaultHandler string) *runtimeapi.ContainerStatus {
	cfg := c.CRIConfig()
	st := &runtimeapi.ContainerStatus{
		Id: c.ID, Metadata: cfg.GetMetadata(), State: containerState(c.State),
		CreatedAt: c.CreatedAt.UnixNano(), StartedAt: unixNano(c.StartedAt), FinishedAt: unixNano(c.FinishedAt),
		ExitCode: c.ExitCode, Image: imageSpec(c, defaultHandler), ImageRef: c.ImageRef, ImageId: c.ImageID,
		Reason: c.Reason, Message: c.Message, Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
		Mounts: statusMounts(c), LogPath: c.LogPath,
		User: &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{Uid: int64(c.User.UID), Gid: int64(c.User.GID), SupplementalGroups: gids(c.User)}},
	}
	return st
}

// statusMounts are the container's CRI mounts, an image volume's with the
// ID of the image mounted (image_ref, as PullImage answered it).
func statusMounts(c *container.Container) []*runtimeapi.Mount {
	mounts := c.CRIConfig().GetMounts()
	if len(c.ImageVolumes) == 0 {
		return mounts
	}
	out := make([]*runtimeapi.Mount, len(mounts))
	for i, m := range mounts {
		out[i] = m
		if id := c.ImageVolumeID(m.GetContainerPath()); id != "" && m.GetImage() != nil {
			out[i] = proto.CloneOf(m)
			out[i].Image.ImageRef = id
		}
	}
	return out
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

// initPidTimeout bounds the wait for a container's shim to report its
// init's pid in a verbose ContainerStatus; a shim that does not answer in
// time leaves the pid out.
const initPidTimeout = time.Second

// containerVerboseInfo is a verbose ContainerStatus's "info": the
// container's record with, as containerd has them (crictl inspect shows
// them), "sandboxID", "pid" (the init's host pid, for nsenter -t; absent
// when the container does not run or its shim does not answer in time) and
// "runtimeSpec" (the OCI spec the runtime got; absent once the bundle is
// gone).
func (s *RuntimeService) containerVerboseInfo(ctx context.Context, c *container.Container) (map[string]string, error) {
	info, err := recordFields(c)
	if err != nil {
		return nil, err
	}
	info["sandboxID"], _ = json.Marshal(c.PodID)
	pctx, cancel := context.WithTimeout(ctx, initPidTimeout)
	pid := s.opts.Containers.InitPid(pctx, c.ID)
	cancel()
	if pid > 0 {
		info["pid"], _ = json.Marshal(pid)
	}
	if spec, err := s.opts.Containers.Spec(c.ID); err == nil && json.Valid(spec) {
		info["runtimeSpec"] = spec
	}
	return infoMap(info)
}

// recordFields is a record's JSON fields, to add to.
func recordFields(record any) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(record)
	if err != nil {
		return nil, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, err
	}
	return fields, nil
}

// infoMap is the verbose info map: everything under "info", one JSON
// object, as crictl expects it.
func infoMap(fields map[string]json.RawMessage) (map[string]string, error) {
	b, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	return map[string]string{"info": string(b)}, nil
}
