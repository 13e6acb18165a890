package testenv

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestPushCritestImages(t *testing.T) {
	r, err := StartRegistry(RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := PushCritestImages(r); err != nil {
		t.Fatal(err)
	}
	for path, user := range map[string]string{
		"e2e-test-images/nonewprivs:1.3": "1000", "k8s-staging-cri-tools/test-image-user-username-group:latest": "www-data:1004",
		"pause:3.10": "65535:65535", "k8s-staging-cri-tools/test-image-tags:3": "",
	} {
		ref := must(name.ParseReference(r.Ref(path)))
		img, err := remote.Image(ref)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		cf, err := img.ConfigFile()
		if err != nil || cf.Config.User != user {
			t.Fatalf("%s: user %q (%v), want %q", path, cf.Config.User, err, user)
		}
	}
}
