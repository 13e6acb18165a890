// Package cri serves the Kubernetes Container Runtime Interface: it
// translates CRI messages to calls into pier's image, sandbox and container
// packages. Handlers stay short; one interceptor gives every request an id,
// logs it, recovers panics and maps errors to gRPC codes.
package cri

import (
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Register adds the CRI services to a gRPC server.
func Register(s *grpc.Server, rt *RuntimeService, img *ImageService) {
	runtimeapi.RegisterRuntimeServiceServer(s, rt)
	runtimeapi.RegisterImageServiceServer(s, img)
}
