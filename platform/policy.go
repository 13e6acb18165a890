package platform

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
)

// Config is the operator's choice: the [platforms] table and the platform
// of each runtime handler that has one.
type Config struct {
	// Emulated lists the foreign platforms every pod may run, when a
	// usable emulator is registered; "auto" means every platform a usable
	// emulator is registered for. Empty: none (the default).
	Emulated []string
	// Handlers maps a runtime handler to the one platform its pods pull
	// and run, native or emulated, even when the image has a native
	// variant.
	Handlers map[string]string
	// Default is the handler of pods that name none ("").
	Default string
}

type settings struct {
	auto     bool
	emulated []Platform
	handlers map[string]Platform
	dflt     string
}

func parseConfig(c Config) (*settings, error) {
	s := &settings{handlers: map[string]Platform{}, dflt: c.Default}
	for _, e := range c.Emulated {
		if e == "auto" {
			s.auto = true
			continue
		}
		p, err := Parse(e)
		if err != nil {
			return nil, fmt.Errorf("[platforms] emulated: %w", err)
		}
		s.emulated = append(s.emulated, p)
	}
	for h, v := range c.Handlers {
		p, err := Parse(v)
		if err != nil {
			return nil, fmt.Errorf("[runtimes.%s] platform: %w", h, err)
		}
		s.handlers[h] = p
	}
	return s, nil
}

// CheckConfig reports what New or Reconfigure would refuse.
func CheckConfig(c Config) error {
	_, err := parseConfig(c)
	return err
}

// Policy is the node's platforms and the operator's choice of emulation.
type Policy struct {
	dir    string
	native []Platform
	set    atomic.Pointer[settings]
}

// New returns the policy for c, reading registrations from dir (BinfmtDir
// on a node).
func New(c Config, dir string) (*Policy, error) {
	s, err := parseConfig(c)
	if err != nil {
		return nil, err
	}
	p := &Policy{dir: dir, native: []Platform{Native()}}
	if Native().Architecture == "amd64" {
		// The kernel runs 32-bit x86 binaries itself (IA32 emulation,
		// built into the kernels of every major distribution).
		p.native = append(p.native, Platform{OS: "linux", Architecture: "386"})
	}
	p.set.Store(s)
	return p, nil
}

// Reconfigure replaces the operator's choice, for pulls and creates that
// start after it. On error nothing changes.
func (p *Policy) Reconfigure(c Config) error {
	s, err := parseConfig(c)
	if err != nil {
		return err
	}
	p.set.Store(s)
	return nil
}

// Emulators reads the registrations now.
func (p *Policy) Emulators() []Emulator { return Scan(p.dir) }

// Native is the node's own platform.
func (p *Policy) Native() Platform { return p.native[0] }

// Want is what a pull for one runtime handler may choose, most preferred
// first, and why anything else is refused.
type Want struct {
	Handler string
	// Platforms are the acceptable platforms, most preferred first.
	Platforms []Platform
	// Fixed is set when the handler runs one platform only.
	Fixed bool

	native    Platform
	opted     []Platform // chosen for emulation, usable or not
	auto      bool
	emulators []Emulator
}

// Want reads the registrations and returns what pods of handler may run:
// for a handler with a platform, that one (if native or usable); else the
// node's own platforms, then the emulated ones chosen, whose emulator is
// usable.
func (p *Policy) Want(handler string) Want {
	s := p.set.Load()
	if handler == "" {
		handler = s.dflt
	}
	w := Want{Handler: handler, native: p.native[0], auto: s.auto, emulators: p.Emulators()}
	if fixed, ok := s.handlers[handler]; ok {
		w.Fixed, w.opted = true, []Platform{fixed}
		if p.isNative(fixed) || w.usable(fixed) != nil {
			w.Platforms = []Platform{fixed}
		}
		return w
	}
	w.Platforms = slices.Clone(p.native)
	w.opted = s.emulated
	if s.auto {
		for _, e := range w.emulators {
			if e.Usable() && !slices.Contains(w.opted, e.Platform) {
				w.opted = append(w.opted, e.Platform)
			}
		}
	}
	for _, o := range w.opted {
		if !p.isNative(o) && w.usable(o) != nil {
			w.Platforms = append(w.Platforms, o)
		}
	}
	return w
}

func (p *Policy) isNative(q Platform) bool {
	return slices.ContainsFunc(p.native, func(n Platform) bool { return n.Matches(q) })
}

// usable returns the usable emulator that runs q, or nil.
func (w Want) usable(q Platform) *Emulator {
	var found *Emulator
	for i, e := range w.emulators {
		if e.Platform.Architecture != q.Architecture {
			continue
		}
		if !e.Usable() && e.Enabled {
			// The kernel takes the newest matching registration, whose
			// order /proc does not show: one unusable one may be it.
			return nil
		}
		if e.Usable() {
			found = &w.emulators[i]
		}
	}
	return found
}

// Rank is have's place in w's preference (0 best), or -1 if a pod of w's
// handler cannot run it.
func (w Want) Rank(have Platform) int {
	return slices.IndexFunc(w.Platforms, func(q Platform) bool { return q.Matches(have) })
}

// Choose returns the index in have of the platform w prefers, or -1.
func (w Want) Choose(have []Platform) int {
	best, at := -1, -1
	for i, h := range have {
		if r := w.Rank(h); r >= 0 && (best < 0 || r < best) {
			best, at = r, i
		}
	}
	return at
}

// Key identifies w's choice, for sharing a pull between requests that
// would choose the same.
func (w Want) Key() string {
	names := make([]string, len(w.Platforms))
	for i, p := range w.Platforms {
		names[i] = p.String()
	}
	return strings.Join(names, ",")
}

// Refuse is the error for image ref, built for have, that pods of w's
// handler cannot run; it says what would make it run.
func (w Want) Refuse(ref string, have []Platform) error {
	names := make([]string, 0, len(have))
	for _, h := range have {
		names = append(names, h.String())
	}
	slices.Sort(names)
	names = slices.Compact(names)
	var built string
	switch len(names) {
	case 0:
		built = "names no platform"
	case 1:
		built = "is built for " + names[0] + " only"
	default:
		built = "is built for " + strings.Join(names, ", ")
	}
	if w.Fixed {
		msg := fmt.Sprintf("image %s %s; runtime handler %q runs %s only", ref, built, w.Handler, w.opted[0])
		if len(w.Platforms) == 0 {
			msg += "; " + w.remedy(w.opted[0], true)
		}
		return fmt.Errorf("%w: %s", ErrUnsupported, msg)
	}
	msg := fmt.Sprintf("image %s %s; this node runs %s", ref, built, w.native)
	for _, o := range w.opted {
		if w.Rank(o) >= 0 {
			msg += ", and " + o.String() + " emulated"
		}
	}
	// What would run the first foreign platform it is built for.
	for _, h := range have {
		if h.OS == w.native.OS && h.Architecture != "" {
			msg += "; " + w.remedy(h, false)
			break
		}
	}
	return fmt.Errorf("%w: %s", ErrUnsupported, msg)
}

// remedy says what would let pods run platform q: an emulator registered
// (with flag F), and the operator's choice.
func (w Want) remedy(q Platform, fixed bool) string {
	qemu := "qemu-" + qemuName(q.Architecture)
	choose := fmt.Sprintf("add %q to [platforms] emulated in pier's configuration, or run the pod with a runtime handler that has platform = %q", q.String(), q.String())
	if fixed {
		choose = ""
	}
	then := func(s string) string {
		if choose == "" {
			return s
		}
		return s + ", and " + choose
	}
	var ignored []string
	for _, e := range w.emulators {
		if e.Platform.Architecture == q.Architecture && !e.Usable() {
			ignored = append(ignored, e.Name+" is registered but ignored: "+e.Ignored)
		}
	}
	switch {
	case len(ignored) > 0:
		return then(strings.Join(ignored, "; ") + "; register " + qemu + " with flag F (Debian's qemu-user-static with binfmt-support does)")
	case w.usable(q) == nil:
		if slices.Contains(w.opted, q) {
			return fmt.Sprintf("%s is chosen for emulation, but no emulator for it is registered with binfmt_misc: register %s with flag F (Debian's qemu-user-static with binfmt-support does)", q, qemu)
		}
		return then("to run it here, register " + qemu + " with binfmt_misc (flag F; Debian's qemu-user-static with binfmt-support does)")
	default:
		return fmt.Sprintf("%s (binfmt_misc) could emulate it, much slower than native: %s", w.usable(q).Name, choose)
	}
}

// qemuName is QEMU's name for a GOARCH.
func qemuName(arch string) string {
	if n, ok := map[string]string{"arm64": "aarch64", "amd64": "x86_64", "386": "i386", "mips64le": "mips64el", "loong64": "loongarch64"}[arch]; ok {
		return n
	}
	return arch
}

// Check says whether a new container of handler may run image (named ref
// in messages), built for have: the image was pulled under the
// registrations and choices of that moment, which may have changed.
func (p *Policy) Check(handler, ref string, have Platform) error {
	if s := p.set.Load(); p.isNative(have) && s.handlers[cmp.Or(handler, s.dflt)] == (Platform{}) {
		return nil // the common case, without reading binfmt_misc
	}
	w := p.Want(handler)
	if w.Rank(have) >= 0 {
		return nil
	}
	if w.Fixed && !w.opted[0].Matches(have) {
		return fmt.Errorf("%w: image %s is built for %s, but runtime handler %q runs %s only: pull the image with that runtime handler (kubelet sends it with the RuntimeClassInImageCriApi feature gate)", ErrUnsupported, ref, have, handler, w.opted[0])
	}
	if have.OS != w.native.OS {
		return w.Refuse(ref, []Platform{have})
	}
	return fmt.Errorf("%w: image %s is built for %s, which this node no longer runs: %s", ErrUnsupported, ref, have, w.remedy(have, w.Fixed))
}

// Info is what Status's verbose info shows: the native platforms, those
// every pod may run emulated, each handler's platform, and the
// registrations found, usable or ignored (with why).
func (p *Policy) Info() map[string]any {
	w := p.Want("\x00") // a name no handler has: the node-wide choice
	s := p.set.Load()
	var native, emulated []string
	for _, n := range p.native {
		native = append(native, n.String())
	}
	for _, q := range w.Platforms[len(p.native):] {
		emulated = append(emulated, q.String())
	}
	handlers := map[string]string{}
	for _, h := range slices.Sorted(maps.Keys(s.handlers)) {
		hw := p.Want(h)
		v := s.handlers[h].String()
		if len(hw.Platforms) == 0 {
			v += " (not runnable: no usable emulator)"
		}
		handlers[h] = v
	}
	type reg struct {
		Name        string `json:"name"`
		Platform    string `json:"platform"`
		Interpreter string `json:"interpreter"`
		Flags       string `json:"flags"`
		Ignored     string `json:"ignored,omitempty"`
	}
	var usable, ignored []reg
	for _, e := range w.emulators {
		r := reg{Name: e.Name, Platform: e.Platform.String(), Interpreter: e.Interpreter, Flags: e.Flags, Ignored: e.Ignored}
		if e.Usable() {
			usable = append(usable, r)
		} else {
			ignored = append(ignored, r)
		}
	}
	chosen := []string{}
	if s.auto {
		chosen = append(chosen, "auto")
	}
	for _, q := range s.emulated {
		chosen = append(chosen, q.String())
	}
	return map[string]any{
		"native":             native,
		"emulated":           emulated,
		"emulatedConfigured": chosen,
		"handlers":           handlers,
		"emulators":          usable,
		"emulatorsIgnored":   ignored,
	}
}
