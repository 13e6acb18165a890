package cni

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// loopbackUp sets the lo interface in the network namespace at netnsPath up,
// with one ioctl instead of running the loopback plugin (a process start).
// It enters the namespace on a locked OS thread that it never unlocks: the Go
// runtime then ends that thread with the goroutine, so no other goroutine
// ever runs in the pod's namespace.
func loopbackUp(netnsPath string) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- setLoUp(netnsPath)
	}()
	return <-errc
}

func setLoUp(netnsPath string) error {
	fd, err := unix.Open(netnsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open netns: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("enter netns %s: %w", netnsPath, err)
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("get lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	return nil
}
