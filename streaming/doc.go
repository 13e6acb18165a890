// Package streaming is pier's CRI streaming server: the HTTP server whose
// URLs the Exec, Attach and PortForward RPCs return, and where clients
// (kubectl through kubelet, crictl) then run their sessions.
//
// Server serves what k8s.io/cri-streaming serves (exec, attach and
// port-forward over SPDY) plus the WebSocket variants that library lacks:
// exec and attach over the v5 channel protocol, and port-forward as SPDY
// tunnelled through a WebSocket. Each URL holds a single-use token that
// expires after a minute.
//
// Sessions runs the sessions themselves over pier's container and sandbox
// managers: exec through the container's shim, attach to the container's
// stdio, port-forward to a port on the loopback of the pod's network
// namespace.
package streaming
