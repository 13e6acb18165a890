package streaming

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"
	utilexec "k8s.io/utils/exec"

	"github.com/pier-runtime/pier/container"
	"github.com/pier-runtime/pier/sandbox"
)

// Sessions runs the sessions of the streaming server (exec, attach and
// port-forward): it implements k8s.io/cri-streaming's Runtime.
type Sessions struct {
	Containers *container.Manager
	Pods       *sandbox.Manager
}

// Exec runs cmd in a container with the client's stdio, a pty with tty.
func (s *Sessions) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	req := container.ExecStreamRequest{Args: cmd, Tty: tty}
	if tty && resize != nil {
		// Clients send the terminal's size first: start the process with it.
		select {
		case size, ok := <-resize:
			if ok {
				req.Width, req.Height = size.Width, size.Height
			}
		case <-time.After(200 * time.Millisecond):
		}
	}
	var copies sync.WaitGroup
	var stdinW *os.File
	if !tty {
		// The process's ends go to the shim; pierd keeps the others.
		var ends []*os.File
		defer func() {
			for _, f := range ends {
				f.Close()
			}
		}()
		if in != nil {
			r, w, err := os.Pipe()
			if err != nil {
				return err
			}
			req.Stdin, stdinW, ends = r, w, append(ends, r)
		}
		for _, o := range []struct {
			dst  io.Writer
			slot **os.File
		}{{out, &req.Stdout}, {errw, &req.Stderr}} {
			if o.dst == nil {
				continue
			}
			r, w, err := os.Pipe()
			if err != nil {
				return err
			}
			*o.slot, ends = w, append(ends, w)
			copies.Go(func() {
				io.Copy(o.dst, r)
				r.Close()
			})
		}
	}
	proc, err := s.Containers.ExecStream(ctx, id, req)
	if req.Stdin != nil {
		req.Stdin.Close()
	}
	for _, f := range []*os.File{req.Stdout, req.Stderr} {
		if f != nil {
			f.Close()
		}
	}
	if err != nil {
		if stdinW != nil {
			stdinW.Close()
		}
		copies.Wait()
		return err
	}
	if tty {
		pty := proc.Pty()
		if in != nil {
			go io.Copy(pty, in)
		}
		if out != nil {
			copies.Go(func() { io.Copy(out, pty) })
		}
		go resizeLoop(resize, proc.Resize)
	} else if stdinW != nil {
		go func() {
			io.Copy(stdinW, in)
			stdinW.Close()
		}()
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done(): // the client went away: leave no process behind
			proc.Kill()
		case <-done:
		}
	}()
	code, err := proc.Wait()
	// The output ends by itself (EOF, or EIO on the pty once drained).
	waitBounded(&copies, 2*time.Second)
	if tty {
		proc.Pty().Close()
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command %q exited with %d", cmd, code), Code: code}
	}
	return nil
}

// waitBounded waits for the output copies, but not forever: a background
// child of the exec may hold the output open.
func waitBounded(wg *sync.WaitGroup, d time.Duration) {
	c := make(chan struct{})
	go func() {
		wg.Wait()
		close(c)
	}()
	select {
	case <-c:
	case <-time.After(d):
	}
}

func resizeLoop(resize <-chan remotecommandserver.TerminalSize, set func(w, h uint16) error) {
	for size := range resize {
		if size.Width > 0 && size.Height > 0 {
			if err := set(size.Width, size.Height); err != nil {
				klog.V(4).InfoS("Terminal resize failed", "err", err)
			}
		}
	}
}

// Attach connects the client to a running container's stdio. Output and
// input are two attachments to the shim, so that the end of the client's
// input (which closes a stdin_once container's stdin) does not end the
// output, which runs until the container exits or the client leaves.
func (s *Sessions) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	att, err := s.Containers.Attach(ctx, id, container.AttachRequest{Stdout: out != nil, Stderr: errw != nil})
	if err != nil {
		return err
	}
	defer att.Close()
	if in != nil {
		input, err := s.Containers.Attach(ctx, id, container.AttachRequest{Stdin: true})
		if err != nil {
			return err
		}
		defer input.Close()
		if input.Stdin != nil {
			go func() {
				io.Copy(input.Stdin, in)
				input.Close()
			}()
		}
		if tty {
			go resizeLoop(resize, input.Resize)
		}
	}
	var copies sync.WaitGroup
	if att.Stdout != nil && out != nil {
		copies.Go(func() { io.Copy(out, att.Stdout) })
	}
	if att.Stderr != nil && errw != nil {
		copies.Go(func() { io.Copy(errw, att.Stderr) })
	}
	outDone := make(chan struct{})
	go func() {
		copies.Wait()
		close(outDone)
	}()
	select {
	case <-outDone: // the container's output ended: it exited
	case <-ctx.Done():
	}
	return nil
}

// PortForward connects stream to a TCP port on the pod's loopback.
func (s *Sessions) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	pod, err := s.Pods.Get(podID)
	if err != nil {
		return err
	}
	if pod.State != sandbox.Ready {
		return fmt.Errorf("pod sandbox %s is not ready", pod.ID)
	}
	conn, err := dialInPod(pod.Namespaces["net"], port)
	if err != nil {
		return fmt.Errorf("port-forward to port %d of pod %s: %w", port, pod.ID, err)
	}
	defer conn.Close()
	errc := make(chan error, 2)
	go func() {
		_, err := io.Copy(conn, stream)
		if tc, ok := conn.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		errc <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		errc <- err
	}()
	select {
	case err = <-errc: // one side ended; the deferred closes end the other
	case <-ctx.Done():
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}

// dialInPod connects to a port on the loopback of the network namespace at
// netns (the host's when ""), IPv4 first, then IPv6. The socket is made on
// a thread that entered the namespace and is then thrown away.
func dialInPod(netns string, port int32) (net.Conn, error) {
	dial := func() (net.Conn, error) {
		var firstErr error
		for _, host := range []string{"127.0.0.1", "::1"} {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(host, fmt.Sprint(port)), 5*time.Second)
			if err == nil {
				return c, nil
			}
			if firstErr == nil {
				firstErr = err
			}
		}
		return nil, firstErr
	}
	if netns == "" {
		return dial()
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		fd, err := unix.Open(netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{nil, err}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("enter the pod's network namespace: %w", err)}
			return
		}
		c, err := dial()
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}
