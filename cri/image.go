package cri

import (
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/platform"
)

// PlatformAnnotation is the annotation of each image's spec (ListImages,
// ImageStatus) that names the platform it is built for ("linux/arm64"); an
// image whose config names none has no such annotation.
const PlatformAnnotation = "io.pier.image.platform"

// ImageService serves the CRI ImageService from pier's image store.
type ImageService struct {
	runtimeapi.UnimplementedImageServiceServer
	store  *image.Store
	policy *platform.Policy
}

// NewImageService returns the image service backed by store, pulling and
// finding for each runtime handler the platforms policy lets its pods run.
// A nil policy runs the node's own platforms only, for every handler.
func NewImageService(store *image.Store, policy *platform.Policy) *ImageService {
	if policy == nil {
		policy, _ = platform.New(platform.Config{}, platform.BinfmtDir) // an empty Config is valid
	}
	return &ImageService{store: store, policy: policy}
}

// want is what pods of the runtime handler spec names may run.
func (s *ImageService) want(spec *runtimeapi.ImageSpec) platform.Want {
	return s.policy.Want(spec.GetRuntimeHandler())
}

// defaultHandler is the name the policy gives the handler of pods that
// name none.
func (s *ImageService) defaultHandler() string {
	return s.policy.Want("").Handler
}

// toImage converts a stored image to its CRI form. Its spec names the
// runtime handler of the pull that last resolved to it ("" for the default
// handler, as kubelet names it), which kubelet's RuntimeClassInImageCriApi
// gate pairs with the image ID.
func toImage(img *image.Image, defaultHandler string) *runtimeapi.Image {
	spec := &runtimeapi.ImageSpec{Image: img.ID}
	if img.Handler != defaultHandler {
		spec.RuntimeHandler = img.Handler
	}
	if img.Platform != (platform.Platform{}) {
		spec.Annotations = map[string]string{PlatformAnnotation: img.Platform.String()}
	}
	out := &runtimeapi.Image{
		Id:          img.ID,
		RepoTags:    img.RepoTags,
		RepoDigests: img.RepoDigests,
		Size:        uint64(img.Size),
		Spec:        spec,
		Pinned:      img.Pinned,
	}
	uid, username := img.User()
	if uid != nil {
		out.Uid = &runtimeapi.Int64Value{Value: *uid}
	}
	out.Username = username
	return out
}
