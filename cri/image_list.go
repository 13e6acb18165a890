package cri

import (
	"context"
	"errors"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/image"
)

// ListImages lists the stored images, or only the one the filter names.
func (s *ImageService) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	var images []*image.Image
	if ref := req.GetFilter().GetImage().GetImage(); ref != "" {
		img, err := s.store.Get(ref)
		if err != nil && !errors.Is(err, image.ErrNotFound) {
			return nil, err
		}
		if img != nil {
			images = append(images, img)
		}
	} else {
		images = s.store.List()
	}
	resp := &runtimeapi.ListImagesResponse{Images: make([]*runtimeapi.Image, 0, len(images))}
	for _, img := range images {
		resp.Images = append(resp.Images, toImage(img))
	}
	return resp, nil
}
