package shim

import (
	"errors"
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
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || pid <= 0 {
				break
			}
		}
		<-sigs
	}
}
