package e2e

import (
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func mustImage(t *testing.T, build func() (v1.Image, error)) v1.Image {
	t.Helper()
	img, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return img
}
