package cri

import (
	"context"
	"encoding/json"
	"errors"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/image"
)

// ImageStatus returns the image the reference names for pods of the
// request's runtime handler (image.Store.Find), or no image and no error
// when there is none: an image stored only for platforms the handler does
// not run is absent for it, so that kubelet pulls it for that handler.
// Verbose adds "info": the config, layers with chain IDs and sizes, the
// platform, as JSON.
func (s *ImageService) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	ref := req.GetImage().GetImage()
	if ref == "" {
		return nil, invalid("ImageStatus: image reference is empty")
	}
	img, err := s.store.Find(ref, s.want(req.GetImage()))
	if errors.Is(err, image.ErrNotFound) {
		klog.V(4).InfoS("ImageStatus: no image", "image", ref, "runtimeHandler", req.GetImage().GetRuntimeHandler(), "reason", err)
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ImageStatusResponse{Image: toImage(img, s.defaultHandler())}
	if req.GetVerbose() {
		info, err := json.Marshal(struct {
			*image.Image
			Platform string `json:"platform"`
			Config   any    `json:"config"`
		}{img, img.Platform.String(), img.Config})
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}
