package image

import (
	"context"
	"errors"
	"fmt"

	"github.com/pier-runtime/pier/platform"
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
	// ErrPlatform: the image has no variant that pods of the pulling
	// runtime handler may run on this node. It is platform.ErrUnsupported,
	// so that the refusals of package platform have this kind too.
	ErrPlatform = platform.ErrUnsupported
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

// failureReasons name the sentinels for FailureReason, in the CRI layer's
// order of precedence (an error made of several takes the first).
var failureReasons = []struct {
	err    error
	reason string
}{
	{ErrInvalidReference, "invalid_reference"},
	{ErrPlatform, "platform"},
	{ErrNotFound, "not_found"},
	{ErrUnauthorized, "unauthorized"},
	{ErrCorrupt, "corrupt"},
	{ErrBadLayer, "bad_layer"},
	{ErrUnavailable, "unavailable"},
	{ErrTooLarge, "too_large"},
	{ErrNoSpace, "no_space"},
	{context.DeadlineExceeded, "deadline_exceeded"},
	{context.Canceled, "canceled"},
}

// FailureReasons lists every reason FailureReason returns.
func FailureReasons() []string {
	out := make([]string, 0, len(failureReasons)+1)
	for _, r := range failureReasons {
		out = append(out, r.reason)
	}
	return append(out, "other")
}

// FailureReason names why a pull failed, in a word fit for a metric
// label: "not_found", "unauthorized", ..., or "other".
func FailureReason(err error) string {
	for _, r := range failureReasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}
