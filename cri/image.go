package cri

import (
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/image"
)

// ImageService serves the CRI ImageService from pier's image store.
type ImageService struct {
	runtimeapi.UnimplementedImageServiceServer
	store *image.Store
}

// NewImageService returns the image service backed by store.
func NewImageService(store *image.Store) *ImageService {
	return &ImageService{store: store}
}

// toImage converts a stored image to its CRI form.
func toImage(img *image.Image) *runtimeapi.Image {
	out := &runtimeapi.Image{
		Id:          img.ID,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        uint64(img.Size),
		Spec:        &runtimeapi.ImageSpec{Image: img.ID},
		Pinned:      img.Pinned,
	}
	uid, username := img.User()
	if uid != nil {
		out.Uid = &runtimeapi.Int64Value{Value: *uid}
	}
	out.Username = username
	return out
}
