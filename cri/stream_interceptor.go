package cri

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
)

// NewStreamInterceptor is NewInterceptor for the server-streaming RPCs
// (GetContainerEvents, the Stream* lists): each stream gets an id, is
// logged when it ends, has its panics turned into Internal errors and its
// error mapped to a gRPC code, and is told to observe, if not nil, once it
// ends.
func NewStreamInterceptor(observe Observer) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		id := requestID.Add(1)
		start := time.Now()
		klog.V(4).InfoS("CRI stream", "id", id, "method", info.FullMethod)
		defer func() {
			if p := recover(); p != nil {
				err = panicked(id, info.FullMethod, p)
			}
			if observe != nil {
				observe(info.FullMethod, status.Code(err), time.Since(start))
			}
		}()
		return answer(ss.Context(), id, info.FullMethod, start, handler(srv, ss))
	}
}
