package image

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pier-runtime/pier/platform"
)

// platformString is p as an image record and CRI clients show it, "" for
// an image that names none.
func platformString(p platform.Platform) string {
	if p == (platform.Platform{}) {
		return ""
	}
	return p.String()
}

func fromV1(p *v1.Platform) platform.Platform {
	if p == nil {
		return platform.Platform{}
	}
	return platform.Normalize(platform.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant})
}

// configPlatform is the platform an image config names (none: the zero
// Platform, an image taken to run anywhere).
func configPlatform(c *v1.ConfigFile) platform.Platform {
	if c == nil {
		return platform.Platform{}
	}
	return platform.Normalize(platform.Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant})
}

// chooseManifest picks the manifest of an index that want prefers, or
// returns want's refusal naming the platforms the image is built for.
// Attestations and other entries that are not runnable images (no
// platform, or unknown/unknown) are never chosen.
func chooseManifest(ref string, idx *v1.IndexManifest, want platform.Want) (v1.Descriptor, error) {
	var (
		have  []platform.Platform
		descs []v1.Descriptor
	)
	for _, m := range idx.Manifests {
		if !m.MediaType.IsImage() || m.Platform == nil || m.Platform.OS == "unknown" || m.Platform.OS == "" {
			continue
		}
		have = append(have, fromV1(m.Platform))
		descs = append(descs, m)
	}
	if i := want.Choose(have); i >= 0 {
		return descs[i], nil
	}
	return v1.Descriptor{}, want.Refuse(ref, have)
}
