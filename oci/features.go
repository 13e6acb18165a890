package oci

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/runtime-spec/specs-go/features"
)

// ReadFeatures asks the runtime what it supports (`<runtime> features`, the
// OCI runtime features document). Runtimes without the command (crun
// before 1.9) return an error; treat them as supporting nothing optional.
func (r *Runtime) ReadFeatures(ctx context.Context) (*features.Features, error) {
	out, err := r.run(ctx, "features", "", nil)
	if err != nil {
		return nil, err
	}
	var f features.Features
	if err := json.Unmarshal(out, &f); err != nil {
		return nil, fmt.Errorf("%s features: %w", r.Name, err)
	}
	return &f, nil
}

// HasMountOption reports whether the runtime's Features list a mount
// option; with none read (or no runtime), it lists none.
func (r *Runtime) HasMountOption(opt string) bool {
	return r != nil && r.Features != nil && slices.Contains(r.Features.MountOptions, opt)
}

// AllowedAnnotation reports whether a container annotation may be copied
// into this runtime's specs (AllowedAnnotations); with no runtime, none may.
func (r *Runtime) AllowedAnnotation(key string) bool {
	if r == nil {
		return false
	}
	for _, a := range r.AllowedAnnotations {
		if p, ok := strings.CutSuffix(a, "*"); ok && strings.HasPrefix(key, p) || a == key {
			return true
		}
	}
	return false
}
