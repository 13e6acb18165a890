package image

import (
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pier-runtime/pier/platform"
)

// canonical gives p the form platform.Parse gives it (arm64 is v8, arm v7
// unless said otherwise), so that equal platforms compare equal; a
// platform Parse refuses (none, or not Linux) is kept as it is.
func canonical(p platform.Platform) platform.Platform {
	if p == (platform.Platform{}) {
		return p
	}
	if q, err := platform.Parse(p.String()); err == nil {
		return q
	}
	return p
}

// platformString is p as an image record and CRI clients show it, "" for
// an image that names none.
func platformString(p platform.Platform) string {
	if p == (platform.Platform{}) {
		return ""
	}
	return p.String()
}

// parsePlatform reads what platformString wrote.
func parsePlatform(s string) platform.Platform {
	if s == "" {
		return platform.Platform{}
	}
	if q, err := platform.Parse(s); err == nil {
		return q
	}
	// Not Linux: kept as written (such an image would not have been pulled).
	parts := strings.SplitN(s, "/", 3)
	p := platform.Platform{OS: parts[0]}
	if len(parts) > 1 {
		p.Architecture = parts[1]
	}
	if len(parts) > 2 {
		p.Variant = parts[2]
	}
	return p
}

func fromV1(p *v1.Platform) platform.Platform {
	if p == nil {
		return platform.Platform{}
	}
	return canonical(platform.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant})
}

// configPlatform is the platform an image config names (none: the zero
// Platform, an image taken to run anywhere).
func configPlatform(c *v1.ConfigFile) platform.Platform {
	if c == nil {
		return platform.Platform{}
	}
	return canonical(platform.Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant})
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
