package cri

import (
	"context"
	"errors"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/image"
)

// ListImages lists the stored images, or only the one the filter names.
func (s *ImageService) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	images, err := s.images(req.GetFilter())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ListImagesResponse{Images: images}, nil
}

// StreamImages is ListImages in pages (sendPages).
func (s *ImageService) StreamImages(req *runtimeapi.StreamImagesRequest, stream runtimeapi.ImageService_StreamImagesServer) error {
	images, err := s.images(req.GetFilter())
	if err != nil {
		return err
	}
	return sendPages(images, func(page []*runtimeapi.Image) error {
		return stream.Send(&runtimeapi.StreamImagesResponse{Images: page})
	})
}

// images lists the stored images, or only those f names: the one an ID
// names, or every image carrying a tag or digest (one per platform).
func (s *ImageService) images(f *runtimeapi.ImageFilter) ([]*runtimeapi.Image, error) {
	var images []*image.Image
	if ref := f.GetImage().GetImage(); ref != "" {
		imgs, err := s.store.Named(ref)
		if err != nil && !errors.Is(err, image.ErrNotFound) {
			return nil, err
		}
		images = imgs
	} else {
		images = s.store.List()
	}
	dflt := s.defaultHandler()
	out := make([]*runtimeapi.Image, 0, len(images))
	for _, img := range images {
		out = append(out, toImage(img, dflt))
	}
	return out, nil
}
