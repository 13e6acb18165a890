// Package platform says which OCI platforms (os/architecture/variant) this
// node runs: its own natively, foreign ones only through QEMU user-mode
// emulation registered with the kernel's binfmt_misc, and only where the
// operator chose it, node-wide ([platforms] emulated) or for one runtime
// handler (platform = "linux/arm64"). The image store asks it what a
// handler's pull may choose (Want), container creation asks it whether an
// image still runs (Check), and Status lists what it found (Info).
//
// binfmt_misc is read each time a decision needs it (a pull, a create,
// Status): a registration can be removed at any moment, and reading a few
// small files costs microseconds. pierd also logs what it finds at
// start-up and on SIGHUP.
package platform

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
)

// Platform is an OS, CPU architecture and optional variant ("linux/arm/v7").
type Platform struct {
	OS           string
	Architecture string
	Variant      string
}

// ErrUnsupported: an image, or a runtime handler, needs a platform this
// node does not run (or the operator has not chosen to emulate).
var ErrUnsupported = errors.New("platform not run by this node")

// Native is the platform of the running node.
func Native() Platform {
	return Normalize(Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH})
}

// Parse reads "os/arch" or "os/arch/variant", as in a config file or
// `--platform`.
func Parse(s string) (Platform, error) {
	parts := strings.Split(strings.TrimSpace(s), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
		return Platform{}, fmt.Errorf("platform %q: want os/architecture[/variant], e.g. linux/arm64", s)
	}
	p := Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	if p.OS != "linux" {
		return Platform{}, fmt.Errorf("platform %q: a Linux node runs only linux/* images (a container shares the host's kernel)", s)
	}
	return Normalize(p), nil
}

// Normalize gives an architecture its usual variant (arm64 is v8, arm is
// v7 unless said otherwise), so that equal platforms compare equal.
func Normalize(p Platform) Platform {
	switch {
	case p.Architecture == "arm64" && p.Variant == "":
		p.Variant = "v8"
	case p.Architecture == "arm" && p.Variant == "":
		p.Variant = "v7"
	}
	return p
}

// String is "os/arch[/variant]"; arm64's only variant, v8, is left out,
// as users write it.
func (p Platform) String() string {
	if p.OS == "" && p.Architecture == "" {
		return "unknown"
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" && !(p.Architecture == "arm64" && p.Variant == "v8") {
		s += "/" + p.Variant
	}
	return s
}

// Matches reports whether an image built for have runs where p runs: same
// OS and architecture (an image that names none runs anywhere), and the
// same variant where both name one (arm64's only variant is v8; an arm/v6
// image runs on arm/v7, not the other way round).
func (p Platform) Matches(have Platform) bool {
	if have.OS == "" && have.Architecture == "" {
		return true
	}
	if have.OS != p.OS || have.Architecture != p.Architecture {
		return false
	}
	a, b := Normalize(p).Variant, Normalize(have).Variant
	if p.Architecture == "arm" {
		return b <= a // v5 < v6 < v7 < v8
	}
	return a == "" || b == "" || a == b
}
