package cri

import (
	"context"
	"encoding/json"
	"errors"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/image"
)

// ImageStatus returns an image, or no image and no error when it is absent.
// Verbose adds "info": the config, layers with chain IDs and sizes, as JSON.
func (s *ImageService) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("ImageStatus: image reference is empty")
	}
	img, err := s.store.Get(ref)
	if errors.Is(err, image.ErrNotFound) {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ImageStatusResponse{Image: toImage(img)}
	if req.GetVerbose() {
		info, err := json.Marshal(struct {
			*image.Image
			Config any `json:"config"`
		}{img, img.Config})
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}
