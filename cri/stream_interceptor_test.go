package cri

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pier-runtime/pier/container"
)

// serverStream is a grpc.ServerStream with only a context.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s serverStream) Context() context.Context { return s.ctx }

// A stream's error is mapped to a gRPC code, its panic is Internal, and
// the observer is told of each stream once it ends.
func TestStreamInterceptor(t *testing.T) {
	var seen []string
	intercept := NewStreamInterceptor(func(method string, code codes.Code, d time.Duration) {
		seen = append(seen, method+" "+code.String())
	})
	info := &grpc.StreamServerInfo{FullMethod: "/test/Stream", IsServerStream: true}
	ss := serverStream{ctx: context.Background()}
	for _, c := range []struct {
		handler grpc.StreamHandler
		code    codes.Code
	}{
		{func(any, grpc.ServerStream) error { return nil }, codes.OK},
		{func(any, grpc.ServerStream) error { return fmt.Errorf("x: %w", container.ErrNotFound) }, codes.NotFound},
		{func(any, grpc.ServerStream) error { panic("boom") }, codes.Internal},
	} {
		if err := intercept(nil, ss, info, c.handler); status.Code(err) != c.code {
			t.Errorf("stream ended with %v, want code %v", err, c.code)
		}
	}
	if want := "[/test/Stream OK /test/Stream NotFound /test/Stream Internal]"; fmt.Sprint(seen) != want {
		t.Errorf("observed %v, want %s", seen, want)
	}
	if err := NewStreamInterceptor(nil)(nil, ss, info, func(any, grpc.ServerStream) error { return nil }); err != nil {
		t.Errorf("without an observer: %v", err)
	}
}
