package installer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// Systemd is what the installer asks of the host's service manager.
type Systemd interface {
	Reload(ctx context.Context) error // daemon-reload
	Enable(ctx context.Context, unit string) error
	Disable(ctx context.Context, unit string) error
	Start(ctx context.Context, unit string) error
	Restart(ctx context.Context, unit string) error
	Stop(ctx context.Context, unit string) error
	// RunOnHost runs argv on the host, outside the pod, as the transient
	// service unit, and waits until it ends. A run of the same unit still
	// going (its installer was killed) is waited for and started again.
	RunOnHost(ctx context.Context, unit string, argv []string) error
}

// systemdBus talks to the host's systemd over its private socket,
// /run/systemd/private under the host's root: it needs no D-Bus daemon and
// no systemctl in the image.
type systemdBus struct {
	socket string
}

// NewSystemd returns the host's systemd, reached under hostRoot.
func NewSystemd(hostRoot string) Systemd {
	h := &host{root: hostRoot}
	return &systemdBus{socket: h.path("/run/systemd/private")}
}

func (s *systemdBus) conn(ctx context.Context) (*sd.Conn, error) {
	if _, err := os.Stat(s.socket); err != nil {
		return nil, fmt.Errorf("systemd's socket %s: %w (the installer needs a host with systemd, and the host's / mounted at its --host-root)", s.socket, err)
	}
	return sd.NewConnection(func() (*godbus.Conn, error) {
		c, err := godbus.Dial("unix:path="+s.socket, godbus.WithContext(ctx))
		if err != nil {
			return nil, err
		}
		if err := c.Auth([]godbus.Auth{godbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	})
}

func (s *systemdBus) Reload(ctx context.Context) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.ReloadContext(ctx)
}

func (s *systemdBus) Enable(ctx context.Context, unit string) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_, _, err = c.EnableUnitFilesContext(ctx, []string{unit}, false, true)
	return err
}

func (s *systemdBus) Disable(ctx context.Context, unit string) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.DisableUnitFilesContext(ctx, []string{unit}, false)
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return nil
	}
	return err
}

type jobFunc func(ctx context.Context, name, mode string, ch chan<- string) (int, error)

// job runs a unit job and waits for its result.
func (s *systemdBus) job(ctx context.Context, what, unit string, f func(*sd.Conn) jobFunc) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	ch := make(chan string, 1)
	if _, err := f(c)(ctx, unit, "replace", ch); err != nil {
		return fmt.Errorf("%s %s: %w", what, unit, err)
	}
	select {
	case r := <-ch:
		if r != "done" {
			return fmt.Errorf("%s %s: %s (see journalctl -u %s on the node)", what, unit, r, unit)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: %w", what, unit, ctx.Err())
	}
}

func (s *systemdBus) Start(ctx context.Context, unit string) error {
	return s.job(ctx, "start", unit, func(c *sd.Conn) jobFunc { return c.StartUnitContext })
}

func (s *systemdBus) Restart(ctx context.Context, unit string) error {
	return s.job(ctx, "restart", unit, func(c *sd.Conn) jobFunc { return c.RestartUnitContext })
}

func (s *systemdBus) Stop(ctx context.Context, unit string) error {
	err := s.job(ctx, "stop", unit, func(c *sd.Conn) jobFunc { return c.StopUnitContext })
	if err != nil && strings.Contains(err.Error(), "not loaded") {
		return nil
	}
	return err
}

func (s *systemdBus) RunOnHost(ctx context.Context, unit string, argv []string) error {
	c, err := s.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	for try := 0; ; try++ {
		ch := make(chan string, 1)
		props := []sd.Property{
			sd.PropDescription("pier-install: " + filepath.Base(argv[0]) + " " + strings.Join(argv[1:], " ")),
			sd.PropType("oneshot"),
			sd.PropExecStart(argv, true),
		}
		_, err := c.StartTransientUnitContext(ctx, unit, "replace", props, ch)
		if err == nil {
			select {
			case r := <-ch:
				if r != "done" {
					return fmt.Errorf("%s on the host: %s (see journalctl -u %s on the node)", unit, r, unit)
				}
				return nil
			case <-ctx.Done():
				return fmt.Errorf("%s on the host: %w", unit, ctx.Err())
			}
		}
		var de godbus.Error
		if !(errors.As(err, &de) && strings.HasSuffix(de.Name, "UnitExists")) && !strings.Contains(err.Error(), "already exists") {
			return fmt.Errorf("run %s on the host: %w", unit, err)
		}
		// A run of a killed installer: wait for it to end, then run again
		// (the command is idempotent).
		p, err := c.GetUnitPropertyContext(ctx, unit, "ActiveState")
		if err != nil {
			return err
		}
		switch st := strings.Trim(p.Value.String(), `"`); {
		case st == "failed" || (st == "inactive" && try > 3):
			// Ended, and kept loaded: let it go.
			if err := c.ResetFailedUnitContext(ctx, unit); err != nil {
				return fmt.Errorf("reset %s on the host: %w", unit, err)
			}
		case try > 600:
			return fmt.Errorf("%s still runs on the host after 10 minutes (state %s)", unit, st)
		default:
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}
