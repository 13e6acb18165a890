package kubelet

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestImageGC checks kubelet's image garbage collection through pier: with
// its high threshold at 1% of the image file system, kubelet removes the
// unused image, and keeps the one a running pod uses and the one pier
// reports pinned.
//
// kubelet collects images when it starts (where its image file system's
// stats are not ready yet, so that this first run fails) and then every
// five minutes: the test runs a pod with garbage collection off, pulls the
// other images, restarts kubelet with the low threshold (which also checks
// that a kubelet restart leaves running pods alone) and waits for the
// collection, beside TestKubelet.
func TestImageGC(t *testing.T) {
	parallel(t)
	n := startNode(t, nodeOptions{pierConfig: fmt.Sprintf("[image]\npinned_images = [%q]\n", reg.Ref(gcPinnedImg))})
	user := ctr("user", idle)
	user.Image = reg.Ref(gcUsedImg)
	if err := n.kubelet.WritePod(newPod("gc", user)); err != nil {
		t.Fatal(err)
	}
	before := n.waitPod(t, "gc", 2*time.Minute, running())
	for _, ref := range []string{gcUnusedImg, gcPinnedImg} {
		if _, err := n.pierd.Images.PullImage(ctx(t), &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: reg.Ref(ref)}}); err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
	}
	images := n.images(t)
	for _, ref := range []string{gcUsedImg, gcUnusedImg, gcPinnedImg} {
		if !slices.ContainsFunc(images, hasTag(reg.Ref(ref))) {
			t.Fatalf("pier lacks %s before the collection: %v", ref, tags(images))
		}
	}
	if i := slices.IndexFunc(images, hasTag(reg.Ref(gcPinnedImg))); !images[i].Pinned {
		t.Errorf("pier does not report %s, in its pinned_images, as pinned", reg.Ref(gcPinnedImg))
	}

	if err := n.kubelet.Stop(); err != nil {
		t.Fatal(err)
	}
	n.kubelet.SetConfig(map[string]any{
		"imageGCHighThresholdPercent": 1,
		"imageGCLowThresholdPercent":  0,
		"imageMinimumGCAge":           "0s",
	})
	if err := n.kubelet.Start(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	deadline := restarted.Add(imageGCPeriod + 90*time.Second)
	for slices.ContainsFunc(n.images(t), hasTag(reg.Ref(gcUnusedImg))) {
		if time.Now().After(deadline) {
			t.Fatalf("kubelet did not remove the unused image %s in %s; pier has %v; kubelet logged:\n%s", reg.Ref(gcUnusedImg), time.Since(restarted).Round(time.Second), tags(n.images(t)),
				grepLines(n.kubelet.LogText(), "image_gc_manager", "garbage collect", "Image garbage collection"))
		}
		time.Sleep(time.Second)
	}
	t.Logf("kubelet removed the unused image %s after its restart", time.Since(restarted).Round(time.Second))
	images = n.images(t)
	for _, ref := range []string{gcUsedImg, gcPinnedImg} {
		if !slices.ContainsFunc(images, hasTag(reg.Ref(ref))) {
			t.Errorf("kubelet's image garbage collection removed %s; pier has %v", reg.Ref(ref), tags(images))
		}
	}
	if log := n.kubelet.LogText(); !strings.Contains(log, "Removing image to free bytes") {
		t.Errorf("kubelet's log does not say it removed an image:\n%s", grepLines(log, "image_gc_manager"))
	}
	// The pod kept running through kubelet's restart.
	after := n.waitPod(t, "gc", time.Minute, running())
	if b, a := status(before, "user"), status(after, "user"); a.ContainerID != b.ContainerID || a.RestartCount != 0 {
		t.Errorf("the pod's container changed over kubelet's restart: before %s, after %s\n%s", b.ContainerID, a.ContainerID, describe(after))
	}
}

// imageGCPeriod is how often kubelet collects images.
const imageGCPeriod = 5 * time.Minute

// images lists pier's images.
func (n *node) images(t *testing.T) []*runtimeapi.Image {
	t.Helper()
	resp, err := call(func(c context.Context) (*runtimeapi.ListImagesResponse, error) {
		return n.pierd.Images.ListImages(c, &runtimeapi.ListImagesRequest{})
	})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Images
}

func hasTag(ref string) func(*runtimeapi.Image) bool {
	return func(img *runtimeapi.Image) bool { return slices.Contains(img.RepoTags, ref) }
}

func tags(images []*runtimeapi.Image) []string {
	var out []string
	for _, img := range images {
		out = append(out, img.RepoTags...)
	}
	return out
}
