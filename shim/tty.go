package shim

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// setWinsize sets the size of the terminal whose pty master is f.
func setWinsize(f *os.File, width, height uint16) error {
	if f == nil {
		return errors.New("not a terminal")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	cerr := rc.Control(func(fd uintptr) {
		err = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: height, Col: width})
	})
	if cerr != nil {
		return cerr
	}
	return err
}
