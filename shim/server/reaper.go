package server

import (
	"errors"
	"os"
	"os/signal"
	"sync"

	"golang.org/x/sys/unix"
)

// reaper reaps the shim's children: the container's init and exec'd
// processes (reparented to the shim, their child subreaper) and orphans.
//
// The runtime commands the shim runs are its children too, and os/exec
// waits for them itself. So reaping (wait4 of any child) happens under the
// write lock, and a runtime command runs under the read lock, together with
// registering the pid it started: the reaper never takes a runtime
// command's exit from os/exec, and never misses the exit of a process that
// ended before its pid was known.
type reaper struct {
	mu sync.RWMutex // read: a runtime command in flight; write: reaping

	pidMu   sync.Mutex
	waiting map[int]chan unix.WaitStatus // pids to report, not yet reaped
}

// newReaper makes the calling process a child subreaper; start starts
// reaping.
func newReaper() (*reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, os.NewSyscallError("prctl PR_SET_CHILD_SUBREAPER", err)
	}
	return &reaper{waiting: make(map[int]chan unix.WaitStatus)}, nil
}

// start reaps children as they exit.
func (r *reaper) start() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	go func() {
		for range sigs {
			r.reap()
		}
	}()
}

// reap reaps every child that has exited.
func (r *reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.pidMu.Lock()
		if ch, ok := r.waiting[pid]; ok {
			delete(r.waiting, pid)
			ch <- ws
		}
		r.pidMu.Unlock()
	}
}

// run runs f, a runtime command, with the reaper held off.
func (r *reaper) run(f func() error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return f()
}

// register returns a channel that receives pid's wait status once it has
// exited. The caller holds the read lock (inside run) from before pid was
// started.
func (r *reaper) register(pid int) <-chan unix.WaitStatus {
	ch := make(chan unix.WaitStatus, 1)
	r.pidMu.Lock()
	r.waiting[pid] = ch
	r.pidMu.Unlock()
	return ch
}

// kill sends sig to registered process pid unless it has been reaped (its
// pid may then be another process's).
func (r *reaper) kill(pid int, sig unix.Signal) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !r.pending(pid) {
		return nil
	}
	return unix.Kill(pid, sig)
}

// pending reports whether registered process pid has not been reaped yet.
func (r *reaper) pending(pid int) bool {
	r.pidMu.Lock()
	defer r.pidMu.Unlock()
	_, ok := r.waiting[pid]
	return ok
}
