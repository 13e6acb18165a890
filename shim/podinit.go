package shim

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// podInit is PID 1 of a pod's PID namespace: it reaps the orphans of the
// namespace until it is killed. It ignores the signals that would end it
// by default, so that no process of the pod can take the namespace down;
// pierd ends it with SIGKILL.
func podInit() {
	signal.Ignore(unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGCHLD)
	r := &reaper{} // it waits for no pid in particular
	for {
		r.reap()
		<-sigs
	}
}
