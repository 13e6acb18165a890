package e2e

import (
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// imageMount is a CRI mount of image ref at path (an image volume).
func imageMount(path, ref, sub string) *runtimeapi.Mount {
	return &runtimeapi.Mount{ContainerPath: path, Readonly: true, Image: &runtimeapi.ImageSpec{Image: ref}, ImageSubPath: sub}
}

// TestImageVolumes mounts images into a container through the CRI: the
// whole of a single-layer image, and a sub-path of a three-layer one with
// its whiteouts applied; read-only, executable, reported with the image's
// ID, kept through a RemoveImage and a pierd restart, and unmounted at
// RemoveContainer. Bad image mounts are refused.
func TestImageVolumes(t *testing.T) {
	p := startPierd(t, "")
	busybox := mustPull(t, p, reg.Ref(busyboxImg))
	whiteout := mustPull(t, p, reg.Ref(whiteoutImg))
	podID, pod := podWithLogs(t, p, "imagevol")

	cfg := containerConfig("vol", "sleep", "1000")
	cfg.Mounts = []*runtimeapi.Mount{
		imageMount("/image", reg.Ref(busyboxImg), ""),
		imageMount("/data", reg.Ref(whiteoutImg), "data"),
		imageMount("/opaque", whiteout, "opaque"),
	}
	id := startContainer(t, p, podID, pod, cfg)

	if got := execOut(t, p, id, "/image/bin/busybox", "echo", "run from the volume"); got != "run from the volume\n" {
		t.Errorf("a binary of the image volume: %q", got)
	}
	if got := execOut(t, p, id, "ls", "-A", "/data"); got != "keep\n" {
		t.Errorf("/data (the image's /data, its deleted file gone): %q", got)
	}
	if got := execOut(t, p, id, "ls", "-A", "/opaque"); got != "new\n" {
		t.Errorf("/opaque (an opaque directory of the image): %q", got)
	}
	for _, f := range []string{"/image/new", "/data/new", "/data/keep"} {
		resp, err := p.Runtime.ExecSync(ctx(t), &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: []string{"sh", "-c", "echo x >> " + f}, Timeout: 20})
		if err != nil || resp.ExitCode == 0 || !strings.Contains(string(resp.Stderr), "Read-only") {
			t.Errorf("write to %s: %v, exit %d, %s", f, err, resp.GetExitCode(), resp.GetStderr())
		}
	}
	want := map[string]string{"/image": busybox, "/data": whiteout, "/opaque": whiteout}
	for _, m := range containerStatus(t, p, id).Mounts {
		if w, ok := want[m.ContainerPath]; ok {
			if m.GetImage().GetImageRef() != w {
				t.Errorf("status of mount %s: image_ref %q, want %q", m.ContainerPath, m.GetImage().GetImageRef(), w)
			}
			delete(want, m.ContainerPath)
		}
	}
	if len(want) > 0 {
		t.Errorf("mounts missing from the status: %v", want)
	}

	// The image removed, its layers stay for the container; a new one
	// cannot mount it.
	if _, err := p.Images.RemoveImage(ctx(t), &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: whiteout}}); err != nil {
		t.Fatal(err)
	}
	again := containerConfig("again", "sleep", "1000")
	again.Mounts = []*runtimeapi.Mount{imageMount("/data", reg.Ref(whiteoutImg), "data")}
	_, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: again, SandboxConfig: pod})
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "pull it first") {
		t.Errorf("an image volume of a removed image: %v, want NotFound saying to pull it", err)
	}

	// Through a pierd killed and restarted.
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if got := execOut(t, p, id, "cat", "/data/keep"); got != "keep\n" {
		t.Errorf("/data/keep after a restart: %q", got)
	}
	if _, err := p.Runtime.StopContainer(ctx(t), &runtimeapi.StopContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Runtime.RemoveContainer(ctx(t), &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), id) {
		t.Errorf("mounts of removed container %s left:\n%s", id, mounts)
	}

	for _, tc := range []struct {
		name  string
		mount *runtimeapi.Mount
		code  codes.Code
		says  string
	}{
		{"writable", &runtimeapi.Mount{ContainerPath: "/v", Image: &runtimeapi.ImageSpec{Image: busybox}}, codes.InvalidArgument, "read-only"},
		{"host path too", &runtimeapi.Mount{ContainerPath: "/v", HostPath: "/tmp", Readonly: true, Image: &runtimeapi.ImageSpec{Image: busybox}}, codes.InvalidArgument, "host path and an image"},
		{"sub-path ..", imageMount("/v", busybox, "etc/../../x"), codes.InvalidArgument, `".."`},
		{"absolute sub-path", imageMount("/v", busybox, "/etc"), codes.InvalidArgument, "absolute"},
		{"missing sub-path", imageMount("/v", busybox, "not-existing"), codes.InvalidArgument, "no such file"},
		{"not pulled", imageMount("/v", reg.Ref("e2e/nowhere:1"), ""), codes.NotFound, "pull it first"},
	} {
		cfg := containerConfig("bad", "sleep", "1000")
		cfg.Mounts = []*runtimeapi.Mount{tc.mount}
		_, err := p.Runtime.CreateContainer(ctx(t), &runtimeapi.CreateContainerRequest{PodSandboxId: podID, Config: cfg, SandboxConfig: pod})
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: %v, want %v saying %s", tc.name, err, tc.code, tc.says)
		}
	}
	if cs, err := p.Runtime.ListContainers(ctx(t), &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: podID}}); err != nil || len(cs.Containers) != 0 {
		t.Errorf("containers left after refused creates: %v %v", cs, err)
	}
}
