package kubelet

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// imageVolumePod mounts the whiteout image (testenv.Whiteout) as an image
// volume, whole and its /data alone (subPath), and writes what it sees
// there to its "out" volume.
func imageVolumePod() *corev1.Pod {
	c := ctr("reader", `ls -A /image/data > /out/data
ls -A /sub > /out/sub
/image/bin/busybox echo ran > /out/exec
if echo x > /image/new 2>/dev/null; then echo writable; else echo read-only; fi > /out/write
touch /out/done
`+idle)
	c.VolumeMounts = []corev1.VolumeMount{mount("out", "/out"), mount("image", "/image"),
		{Name: "image", MountPath: "/sub", SubPath: "data"}}
	p := newPod("imagevolume", c)
	p.Spec.Volumes = []corev1.Volume{emptyDir("out"), {Name: "image", VolumeSource: corev1.VolumeSource{
		Image: &corev1.ImageVolumeSource{Reference: reg.Ref(whiteoutImg), PullPolicy: corev1.PullIfNotPresent}}}}
	return p
}

// checkImageVolume checks, from inside the image volume pod's container,
// that kubelet had pier mount the image read-only, whole and by sub-path,
// and that pier reports the image's ID for both mounts.
func checkImageVolume(t *testing.T, n *node) {
	p := n.waitPod(t, "imagevolume", 2*time.Minute, running())
	dir := n.readOutput(t, p, "out", time.Minute)
	for file, want := range map[string]string{"data": "keep\n", "sub": "keep\n", "exec": "ran\n", "write": "read-only\n"} {
		if got := readFile(t, dir+"/"+file); got != want {
			t.Errorf("%s: %q, want %q", file, got, want)
		}
	}
	// The image's digest, in pier's status of the container's mounts.
	// (kubelet 1.37's ImageVolumeWithDigest cannot show it in the pod's
	// status from any runtime: it matches the CRI status's mounts by a
	// volume name that the CRI does not carry.)
	img, err := call(func(c context.Context) (*runtimeapi.ImageStatusResponse, error) {
		return n.pierd.Images.ImageStatus(c, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: reg.Ref(whiteoutImg)}})
	})
	if err != nil || img.Image == nil {
		t.Fatalf("ImageStatus of the volume's image: %v %v", img, err)
	}
	cs, _ := n.criPod(t, p.Name)
	if len(cs) != 1 {
		t.Fatalf("pier runs %d containers of the pod, want 1", len(cs))
	}
	st, err := call(func(c context.Context) (*runtimeapi.ContainerStatusResponse, error) {
		return n.pierd.Runtime.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: cs[0].Id})
	})
	if err != nil {
		t.Fatal(err)
	}
	refs := 0
	for _, m := range st.Status.Mounts {
		if m.GetImage().GetImage() != "" {
			if m.Image.ImageRef != img.Image.Id {
				t.Errorf("mount %s: image_ref %q, want the image's ID %s", m.ContainerPath, m.Image.ImageRef, img.Image.Id)
			}
			refs++
		}
	}
	if refs != 2 {
		t.Errorf("image mounts in the container's status: %d, want 2: %v", refs, st.Status.Mounts)
	}
}
