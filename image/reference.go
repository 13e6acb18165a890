package image

import (
	"strings"

	"github.com/distribution/reference"
)

// normalize parses a CRI image reference the way kubelet and docker do:
// "busybox" is "docker.io/library/busybox:latest". A reference with a digest
// keeps its digest (and its tag, if it has both).
func normalize(s string) (reference.Named, error) {
	if s == "" {
		return nil, errorf(ErrInvalidReference, "invalid image reference: empty")
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return nil, errorf(ErrInvalidReference, "invalid image reference %q: %v", s, err)
	}
	if _, ok := named.(reference.Digested); ok {
		return named, nil
	}
	return reference.TagNameOnly(named), nil
}

// isID reports whether s looks like an image ID ("sha256:<64 hex>" or 64 hex).
func isID(s string) bool {
	s = strings.TrimPrefix(s, "sha256:")
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
