package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/image"
)

func TestInterceptorMapsErrors(t *testing.T) {
	info := &grpc.UnaryServerInfo{FullMethod: "/test/Method"}
	cases := []struct {
		err  error
		code codes.Code
	}{
		{nil, codes.OK},
		{fmt.Errorf("pull: %w", image.ErrNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", image.ErrInvalidReference), codes.InvalidArgument},
		{fmt.Errorf("x: %w", image.ErrPlatform), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", image.ErrUnauthorized), codes.Unauthenticated},
		// A pull tried on a mirror and upstream: not found wins over unreachable.
		{errors.Join(fmt.Errorf("a: %w", image.ErrUnavailable), fmt.Errorf("b: %w", image.ErrNotFound)), codes.NotFound},
		{status.Error(codes.AlreadyExists, "x"), codes.AlreadyExists},
		// The disk is full (a CreateContainer's mkdir), or exec slots are.
		{&os.PathError{Op: "mkdir", Path: "/var/lib/pier/containers/x", Err: syscall.ENOSPC}, codes.ResourceExhausted},
		{fmt.Errorf("x: %w", container.ErrBusy), codes.ResourceExhausted},
		{errors.New("surprise"), codes.Unknown},
	}
	for _, c := range cases {
		_, err := Interceptor(context.Background(), nil, info, func(context.Context, any) (any, error) { return nil, c.err })
		if status.Code(err) != c.code {
			t.Errorf("%v: code %v, want %v", c.err, status.Code(err), c.code)
		}
	}
	_, err := Interceptor(context.Background(), nil, info, func(context.Context, any) (any, error) { panic("boom") })
	if status.Code(err) != codes.Internal {
		t.Fatalf("panic: %v", err)
	}
}

// A request whose deadline passes fails with DeadlineExceeded, whatever
// broke on the way.
func TestInterceptorReportsTheDeadline(t *testing.T) {
	info := &grpc.UnaryServerInfo{FullMethod: "/test/Method"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	<-ctx.Done()
	_, err := Interceptor(ctx, nil, info, func(context.Context, any) (any, error) {
		return nil, fmt.Errorf("registry unreachable: %w", image.ErrUnavailable)
	})
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "registry unreachable") {
		t.Fatalf("got %v", err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	_, err = Interceptor(cctx, nil, info, func(context.Context, any) (any, error) { return nil, status.Error(codes.Unavailable, "x") })
	if status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled: %v", err)
	}
	// A request that succeeds as its deadline passes still succeeds.
	if _, err := Interceptor(ctx, nil, info, func(context.Context, any) (any, error) { return "ok", nil }); err != nil {
		t.Fatal(err)
	}
}

// The observer sees each request once, with the code the client gets,
// panics too.
func TestInterceptorObserves(t *testing.T) {
	type seen struct {
		method string
		code   codes.Code
	}
	var got []seen
	icpt := NewInterceptor(func(m string, c codes.Code, d time.Duration) {
		if d < 0 {
			t.Errorf("negative duration %v", d)
		}
		got = append(got, seen{m, c})
	})
	info := &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/Version"}
	icpt(context.Background(), nil, info, func(context.Context, any) (any, error) { return "ok", nil })
	icpt(context.Background(), nil, info, func(context.Context, any) (any, error) { return nil, fmt.Errorf("x: %w", image.ErrNotFound) })
	icpt(context.Background(), nil, info, func(context.Context, any) (any, error) { panic("boom") })
	want := []seen{{info.FullMethod, codes.OK}, {info.FullMethod, codes.NotFound}, {info.FullMethod, codes.Internal}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("observed %v, want %v", got, want)
	}
}
