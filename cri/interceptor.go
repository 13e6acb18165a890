package cri

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/confine"
	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/image"
	"github.com/pier-runtime/pier/sandbox"
)

var requestID atomic.Uint64

// Interceptor logs each request with an id and its duration, turns panics
// into Internal errors, and maps pier's errors to gRPC codes. It never logs
// request bodies: they may hold registry credentials.
func Interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	return intercept(ctx, req, info, handler, nil)
}

// Observer is told each request's full method, gRPC code and duration
// (package metrics counts them). It runs on every request: it must be quick.
type Observer func(fullMethod string, code codes.Code, d time.Duration)

// NewInterceptor is Interceptor that also tells observe, if not nil, of
// each request once it is answered.
func NewInterceptor(observe Observer) grpc.UnaryServerInterceptor {
	if observe == nil {
		return Interceptor
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return intercept(ctx, req, info, handler, observe)
	}
}

func intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler, observe Observer) (resp any, err error) {
	id := requestID.Add(1)
	start := time.Now()
	defer func() {
		if p := recover(); p != nil {
			resp, err = nil, panicked(id, info.FullMethod, p)
		}
		if observe != nil {
			observe(info.FullMethod, status.Code(err), time.Since(start))
		}
	}()
	resp, err = handler(ctx, req)
	return resp, answer(ctx, id, info.FullMethod, start, err)
}

// panicked logs a handler's panic p and returns the error it answers.
func panicked(id uint64, method string, p any) error {
	klog.ErrorS(nil, "Panic in CRI handler", "id", id, "method", method, "panic", p, "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "internal error in %s: %v", method, p)
}

// answer is the error a request of method that started at start ends
// with, err mapped to a gRPC code, and logs the request.
func answer(ctx context.Context, id uint64, method string, start time.Time, err error) error {
	if err != nil && ctx.Err() != nil {
		// The client's deadline passed (or it gave up) during the request:
		// that, not what broke on the way (a registry fetch, say), is why
		// it failed.
		code := codes.Canceled
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			code = codes.DeadlineExceeded
		}
		err = status.Errorf(code, "%v: %s", ctx.Err(), status.Convert(err).Message())
	}
	err = toStatus(err)
	if err != nil {
		level := klog.Level(2)
		if c := status.Code(err); c == codes.Internal || c == codes.Unknown {
			level = 0
		}
		klog.V(level).InfoS("CRI request failed", "id", id, "method", method, "code", status.Code(err), "err", err, "duration", time.Since(start))
	} else {
		klog.V(4).InfoS("CRI request", "id", id, "method", method, "duration", time.Since(start))
	}
	return err
}

// codeOf lists pier's error kinds in order of precedence: an error made of
// several (a pull tried on a mirror and upstream) takes the first that matches.
var codeOf = []struct {
	err  error
	code codes.Code
}{
	{image.ErrInvalidReference, codes.InvalidArgument},
	{image.ErrPlatform, codes.FailedPrecondition},
	{image.ErrNotFound, codes.NotFound},
	{image.ErrUnauthorized, codes.Unauthenticated},
	{image.ErrCorrupt, codes.DataLoss},
	{image.ErrBadLayer, codes.FailedPrecondition},
	{image.ErrUnavailable, codes.Unavailable},
	{image.ErrTooLarge, codes.ResourceExhausted},
	{image.ErrNoSpace, codes.ResourceExhausted},
	{sandbox.ErrInvalid, codes.InvalidArgument},
	{sandbox.ErrNotFound, codes.NotFound},
	{sandbox.ErrAlreadyExists, codes.AlreadyExists},
	{confine.ErrUnsupported, codes.FailedPrecondition},
	{confine.ErrInvalid, codes.InvalidArgument},
	{container.ErrInvalid, codes.InvalidArgument},
	{container.ErrNotFound, codes.NotFound},
	{container.ErrAlreadyExists, codes.AlreadyExists},
	{container.ErrNotRunning, codes.FailedPrecondition},
	{container.ErrPodNotReady, codes.FailedPrecondition},
	{container.ErrCheckpoint, codes.FailedPrecondition},
	{container.ErrBusy, codes.ResourceExhausted},
	// The node's disk (or a quota) is full: a CreateContainer, a record.
	{syscall.ENOSPC, codes.ResourceExhausted},
	{syscall.EDQUOT, codes.ResourceExhausted},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	for _, c := range codeOf {
		if errors.Is(err, c.err) {
			return status.Error(c.code, err.Error())
		}
	}
	return status.Error(codes.Unknown, err.Error())
}

// invalidState is the error for a request on an object in the wrong state.
func invalidState(format string, a ...any) error {
	return status.Error(codes.FailedPrecondition, fmt.Sprintf(format, a...))
}

// invalid is the error for a request that lacks a required field.
func invalid(format string, a ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, a...))
}
