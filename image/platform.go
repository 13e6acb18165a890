package image

import (
	"os"
	"runtime"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Platform is an OS, CPU architecture and optional variant ("linux/arm/v7").
type Platform struct {
	OS           string
	Architecture string
	Variant      string
}

// NodePlatform is the platform of the running node.
func NodePlatform() Platform {
	p := Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	switch p.Architecture {
	case "arm64":
		p.Variant = "v8"
	case "arm":
		p.Variant = "v7"
	}
	return p
}

func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// runs reports whether an image built for have runs on a node of platform p.
// A missing variant on either side matches; arm64's only variant is v8.
func (p Platform) runs(have Platform) bool {
	if have.OS != p.OS || (have.Architecture != p.Architecture && have.Architecture != "") {
		return false
	}
	norm := func(v string) string {
		if p.Architecture == "arm64" && v == "v8" {
			return ""
		}
		return v
	}
	a, b := norm(p.Variant), norm(have.Variant)
	return a == "" || b == "" || a == b
}

// emulated reports whether the host's binfmt_misc runs binaries of arch
// through qemu-user, so that an image for arch still runs here.
func emulated(arch string) bool {
	qemu := map[string]string{"arm64": "aarch64", "amd64": "x86_64", "386": "i386", "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "arm": "arm"}[arch]
	if qemu == "" {
		return false
	}
	b, err := os.ReadFile("/proc/sys/fs/binfmt_misc/qemu-" + qemu)
	return err == nil && strings.HasPrefix(string(b), "enabled")
}

// accepts reports whether an image for have can run on this node, natively
// or under registered emulation.
func (p Platform) accepts(have Platform) bool {
	return p.runs(have) || (have.OS == p.OS && emulated(have.Architecture))
}

func fromV1(p *v1.Platform) Platform {
	if p == nil {
		return Platform{}
	}
	return Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}
}

// pickManifest chooses the manifest of an index that runs on this node,
// preferring a native one, or says which platforms the image is built for.
func (p Platform) pickManifest(ref string, idx *v1.IndexManifest) (v1.Descriptor, error) {
	var have []Platform
	for _, m := range idx.Manifests {
		if !m.MediaType.IsImage() || m.Platform == nil || m.Platform.OS == "unknown" {
			continue // attestations and other non-runnable entries
		}
		have = append(have, fromV1(m.Platform))
	}
	for _, native := range []bool{true, false} {
		for _, m := range idx.Manifests {
			if !m.MediaType.IsImage() || m.Platform == nil {
				continue
			}
			pl := fromV1(m.Platform)
			if (native && p.runs(pl)) || (!native && p.accepts(pl)) {
				return m, nil
			}
		}
	}
	return v1.Descriptor{}, p.mismatch(ref, have)
}

// mismatch is the error for an image that has no variant for this node.
func (p Platform) mismatch(ref string, have []Platform) error {
	names := make([]string, 0, len(have))
	for _, h := range have {
		names = append(names, h.String())
	}
	slices.Sort(names)
	names = slices.Compact(names)
	switch len(names) {
	case 0:
		return errorf(ErrPlatform, "image %s names no platform; this node runs %s", ref, p)
	case 1:
		return errorf(ErrPlatform, "image %s is built for %s only; this node runs %s", ref, names[0], p)
	}
	return errorf(ErrPlatform, "image %s is built for %s; this node runs %s", ref, strings.Join(names, ", "), p)
}
