package image

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test them with errors.Is; the CRI layer maps them
// to gRPC codes in one place.
var (
	// ErrInvalidReference: the image reference cannot be parsed.
	ErrInvalidReference = errors.New("invalid image reference")
	// ErrNotFound: the image (locally) or the repository or tag (in a registry) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry refused the credentials, or none were given.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnavailable: the registry could not be reached.
	ErrUnavailable = errors.New("registry unavailable")
	// ErrPlatform: the image has no variant that runs on this node.
	ErrPlatform = errors.New("image not built for this node's platform")
	// ErrCorrupt: registry content did not match its digest, size or diff ID.
	ErrCorrupt = errors.New("content does not match its digest")
	// ErrBadLayer: a layer's tar cannot be unpacked safely (say, a link
	// that points outside the layer).
	ErrBadLayer = errors.New("layer cannot be unpacked")
)

// kindError gives err the kind of a sentinel without adding the sentinel's
// text to the message: errors.Is(e, kind) holds, e.Error() is err's message.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string        { return e.err.Error() }
func (e *kindError) Unwrap() error        { return e.err }
func (e *kindError) Is(target error) bool { return target == e.kind }

func withKind(kind, err error) error { return &kindError{kind: kind, err: err} }

func errorf(kind error, format string, a ...any) error {
	return withKind(kind, fmt.Errorf(format, a...))
}
