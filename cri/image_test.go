package cri

import (
	"context"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/platform"
)

// Each image's spec carries the handler of its last pull ("" for the
// default one, as kubelet names it) and its platform.
func TestToImageSpec(t *testing.T) {
	arm := platform.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	for _, c := range []struct {
		img            image.Image
		handler, annot string
	}{
		{image.Image{ID: "sha256:a", Handler: "runc", Platform: platform.Native()}, "", platform.Native().String()},
		{image.Image{ID: "sha256:b", Handler: "arm", Platform: arm}, "arm", "linux/arm64"},
		{image.Image{ID: "sha256:c"}, "", ""},
	} {
		got := toImage(&c.img, "runc")
		if got.Spec.GetImage() != c.img.ID || got.Spec.GetRuntimeHandler() != c.handler || got.Spec.GetAnnotations()[PlatformAnnotation] != c.annot {
			t.Errorf("%s: spec %+v", c.img.ID, got.Spec)
		}
	}
}

// ImageStatus asks the store for the image of the request's handler: a
// store without the image answers with none, and no error.
func TestImageStatusAbsent(t *testing.T) {
	store, err := image.New(image.Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	policy, err := platform.New(platform.Config{Handlers: map[string]string{"arm": "linux/arm64"}}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewImageService(store, policy)
	resp, err := s.ImageStatus(context.Background(), &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: "busybox", RuntimeHandler: "arm"}})
	if err != nil || resp.Image != nil {
		t.Fatalf("ImageStatus of an absent image: %v, %v", resp, err)
	}
}
