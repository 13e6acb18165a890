// Package installer installs pier onto a node from inside a pod: the
// container of pier's DaemonSet (cmd/pier-install), with the host's root
// file system mounted into it. It copies pier's binaries and systemd unit
// to the host, writes pier's configuration (drop-ins beside an operator's
// file, never over it), starts pier through the host's systemd and, when
// asked, switches the node's kubelet to pier: taint the node, restart the
// kubelet on pier's endpoint from a transient unit on the host (a pod
// killed meanwhile never leaves the kubelet stopped), wait until the node
// reports pier, untaint, and remove the pods left in the previous runtime
// (the kubelet has re-created them on pier).
//
// Every step is idempotent and recorded in a state file on the host
// (/var/lib/pier-install) before the next begins, so that an installer
// killed at any moment, or the DaemonSet's pod re-created on pier after the
// switch, resumes where it stopped. Uninstall undoes exactly what the state
// records, and removes the state last.
package installer

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pier-runtime/pier/internal/atomicfile"
)

// PierEndpoint is pier's CRI socket, as the kubelet names it.
const PierEndpoint = "unix:///run/pier/pier.sock"

// socket is the host path of a kubelet endpoint (unix:///path, or a bare
// path, which the kubelet also takes), its symbolic links resolved as the
// host resolves them: unix:///var/run/pier/pier.sock is pier's socket.
func (h *host) socket(endpoint string) string {
	p, _ := strings.CutPrefix(endpoint, "unix://")
	return h.path(p)
}

// same reports whether two endpoints name one socket.
func (h *host) same(a, b string) bool { return h.socket(a) == h.socket(b) }

// Host paths the installer writes.
const (
	binDir     = "/usr/local/bin" // pierd, pier-shim, pier-shim-monitor (as pier.service says)
	optDir     = "/opt/pier"      // the installer itself, runtimes, CNI plugins
	unitFile   = "/etc/systemd/system/pier.service"
	unitName   = "pier.service"
	configFile = "/etc/pier/config.toml"
	dropInDir  = "/etc/pier/config.d"
	genDropIn  = dropInDir + "/40-pier-install.toml"
	cniConfDir = "/etc/cni/net.d"
	pierRoot   = "/var/lib/pier"
	pierState  = "/run/pier"
)

// configPlaceholder is the configuration file the installer writes where
// the node has none, for the operator to edit (it is never rewritten).
const configPlaceholder = "# pier's configuration: every key is optional (pierd config default prints them).\n# pier-install's settings are in config.d/, merged over this file.\n"

// Options say what to install and how to reach the host.
type Options struct {
	HostRoot  string // the host's / as mounted in the pod ("/" on the host)
	Payload   string // the image's pier tree (bin/, cni/bin/, share/)
	ConfigDir string // pier drop-ins to install (the chart's ConfigMap); "" for none
	Self      string // this installer's binary, copied to the host for the kubelet switch

	SwitchKubelet bool
	KubeletConfig string // host path of the kubelet's configuration file
	KubeletFlags  string // host path of kubeadm's flags file ("" or missing: none)
	KubeletUnit   string
	NodeName      string
	Timeout       time.Duration

	Systemd  Systemd
	Cluster  Cluster // nil: no API server (standalone kubelet)
	Runtimes Runtimes
	// Probe runs a binary of the host (a host path) with --version, as the
	// host would; nil runs it chrooted into the host's root.
	Probe func(ctx context.Context, path string) error
	Log   func(format string, args ...any)
	// BeforeStep, when set, is called before each step, and before each
	// file is written ("write <host path>"); an error stops the installer
	// there (tests kill it at each point this way).
	BeforeStep func(step string) error
}

// Installer installs and uninstalls pier on one node.
type Installer struct {
	o Options
	h *host
}

// New returns an installer for o.
func New(o Options) *Installer {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	i := &Installer{o: o, h: &host{root: o.HostRoot, log: o.Log}}
	if i.o.Probe == nil {
		i.o.Probe = i.chrootProbe
	}
	if o.BeforeStep != nil {
		i.h.beforeWrite = func(p string) error { return o.BeforeStep("write " + p) }
	}
	return i
}

func (i *Installer) kubelet() kubeletFiles {
	return kubeletFiles{Config: i.o.KubeletConfig, Flags: i.o.KubeletFlags}
}

// step runs f as the named step unless the state says it is done, then
// records it done.
func (i *Installer) step(s *state, name string, f func() error) error {
	if s.done(name) {
		return nil
	}
	if i.o.BeforeStep != nil {
		if err := i.o.BeforeStep(name); err != nil {
			return err
		}
	}
	t := time.Now()
	i.o.Log("%s: %s", s.Phase, name)
	if err := f(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	i.o.Log("%s: %s done in %s", s.Phase, name, time.Since(t).Round(time.Millisecond))
	s.Done = append(s.Done, name)
	return i.h.save(s)
}

// begin takes the lock and loads the state for phase. A state of the
// other phase starts this one from its first step (each is idempotent),
// keeping what was recorded. Install's own steps (files, service, label)
// run again on every install, a new release's or a resumed one's: only
// the kubelet's moves, which restart it, are remembered as done.
func (i *Installer) begin(phase string) (*state, func(), error) {
	unlock, err := i.h.lock()
	if err != nil {
		return nil, nil, err
	}
	s, err := i.h.loadState()
	if err != nil {
		unlock()
		return nil, nil, err
	}
	if s.Phase != phase {
		s.Phase, s.Done = phase, nil
	}
	if phase == "install" {
		s.Done = slices.DeleteFunc(s.Done, func(d string) bool { return !strings.Contains(d, "/") && d != "kubelet-record" })
	}
	return s, unlock, nil
}

// Install installs pier, and switches the kubelet when asked.
func (i *Installer) Install(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, i.o.Timeout)
	defer cancel()
	s, unlock, err := i.begin("install")
	if err != nil {
		return err
	}
	defer unlock()
	if err := i.step(s, "files", func() error { return i.installFiles(ctx, s) }); err != nil {
		return err
	}
	if err := i.step(s, "service", func() error { return i.startPier(ctx, s) }); err != nil {
		return err
	}
	switch {
	case i.o.SwitchKubelet:
		if err := i.switchKubelet(ctx, s); err != nil {
			return err
		}
	case s.Kubelet != nil:
		// A release that no longer switches the kubelet: back it goes.
		if err := i.switchBack(ctx, s); err != nil {
			return err
		}
	}
	if err := i.step(s, "label", func() error { return i.label(ctx, true) }); err != nil {
		return err
	}
	return i.step(s, "installed", func() error { return nil })
}

// Uninstall undoes what Install did, as recorded in the state: it
// switches the kubelet back first, then removes pier's pods, stops pier
// and removes its files.
func (i *Installer) Uninstall(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, i.o.Timeout)
	defer cancel()
	if !i.h.exists(filepath.Join(StateDir, "state.json")) {
		i.o.Log("pier-install has not installed anything on this node")
		return i.label(ctx, false)
	}
	s, unlock, err := i.begin("uninstall")
	if err != nil {
		return err
	}
	defer unlock()
	if s.Kubelet != nil {
		if err := i.switchBack(ctx, s); err != nil {
			return err
		}
	}
	// A kubelet on pier that the installer did not move there (it was so
	// before, or an operator moved it): removing pier would stop every pod
	// of the node, the uninstaller's own among them, again and again.
	if e, err := i.kubelet().read(i.h); err == nil && i.h.same(e.Runtime(), PierEndpoint) {
		return fmt.Errorf("the kubelet uses pier (%s), and pier-install did not switch it: point it at another runtime first (%s), then uninstall", e.Runtime(), i.o.KubeletConfig)
	}
	// pier was installed on the node before pier-install (its unit was
	// backed up): its files come back and it runs on, with its pods.
	_, hadPier := s.Backups[unitFile]
	if err := i.step(s, "pier-pods", func() error {
		if hadPier {
			return nil
		}
		n, err := i.o.Runtimes.RemovePods(ctx, PierEndpoint)
		if n > 0 {
			i.o.Log("removed %d pods left on pier", n)
		}
		return err
	}); err != nil {
		return err
	}
	if err := i.step(s, "service", func() error {
		if hadPier {
			return nil
		}
		if err := i.o.Systemd.Stop(ctx, unitName); err != nil {
			return err
		}
		return i.o.Systemd.Disable(ctx, unitName)
	}); err != nil {
		return err
	}
	if err := i.step(s, "files", func() error {
		for _, t := range []string{pierRoot, pierState} {
			if s.created(t) {
				if err := i.h.removeTree(t); err != nil {
					return err
				}
			}
		}
		// The configuration file it created stays if someone edited it.
		if s.created(configFile) {
			if same, err := sameContent(i.h.path(configFile), bytesSource([]byte(configPlaceholder))); err == nil && !same {
				i.o.Log("kept %s: it was edited", configFile)
				s.Created = slices.DeleteFunc(s.Created, func(c string) bool { return c == configFile })
			}
		}
		if err := i.h.restore(s); err != nil {
			return err
		}
		if err := i.o.Systemd.Reload(ctx); err != nil {
			return err
		}
		if hadPier {
			return i.o.Systemd.Restart(ctx, unitName)
		}
		return nil
	}); err != nil {
		return err
	}
	if err := i.step(s, "label", func() error { return i.label(ctx, false) }); err != nil {
		return err
	}
	if i.o.BeforeStep != nil {
		if err := i.o.BeforeStep("state"); err != nil {
			return err
		}
	}
	// The state goes last, and the state directory with it.
	if err := os.RemoveAll(i.h.path(StateDir)); err != nil {
		return err
	}
	i.o.Log("uninstall: pier is removed from this node")
	return nil
}

// Installed reports whether Install finished on this node.
func (i *Installer) Installed() (bool, error) {
	s, err := i.h.loadState()
	if err != nil {
		return false, err
	}
	return s.Phase == "install" && s.done("installed"), nil
}

// label labels the node installed (or not), and as running its pods on
// pier when its kubelet uses pier.
func (i *Installer) label(ctx context.Context, on bool) error {
	if i.o.Cluster == nil {
		return nil
	}
	installed, runtime := "", ""
	if on {
		installed = "true"
		if e, err := i.kubelet().read(i.h); err == nil && i.h.same(e.Runtime(), PierEndpoint) {
			runtime = "pier"
		}
	}
	if err := i.o.Cluster.SetLabel(ctx, i.o.NodeName, LabelRuntime, runtime); err != nil {
		return err
	}
	return i.o.Cluster.SetLabel(ctx, i.o.NodeName, LabelInstalled, installed)
}

// installFiles puts pier's files on the host.
func (i *Installer) installFiles(ctx context.Context, s *state) error {
	changed := false
	put := func(src, dst string) error {
		c, err := i.h.copyFile(s, src, dst)
		changed = changed || c
		return err
	}
	// pier's own state directories: removed on uninstall only when the
	// installer saw them made.
	for _, d := range []string{pierRoot, pierState} {
		if !i.h.exists(d) && !s.created(d) {
			s.Created = append(s.Created, d)
		}
	}
	// The monitor first: a pier-shim starting meanwhile must find a
	// monitor that understands it.
	for _, b := range []string{"pier-shim-monitor", "pier-shim", "pierd"} {
		if err := put(filepath.Join(i.o.Payload, "bin", b), filepath.Join(binDir, b)); err != nil {
			return err
		}
	}
	if i.o.Self != "" {
		if _, err := i.h.copyFile(s, i.o.Self, filepath.Join(optDir, "bin", "pier-install")); err != nil {
			return err
		}
	}
	// Runtimes: the host's own when it has one (its distribution keeps it
	// patched), else the image's when it runs on the host.
	var gen strings.Builder
	gen.WriteString("# Written by pier-install: the runtimes and CNI plugins it installed.\n# Edit other drop-ins or config.toml; this file is rewritten.\n")
	for _, rt := range []string{"runc", "crun"} {
		src := filepath.Join(i.o.Payload, "bin", rt)
		if _, err := os.Stat(src); err != nil {
			continue
		}
		if p := i.hostHas(rt); p != "" {
			i.o.Log("%s: the host's %s", rt, p)
			continue
		}
		dst := filepath.Join(optDir, "bin", rt)
		if err := put(src, dst); err != nil {
			return err
		}
		if err := i.o.Probe(ctx, dst); err != nil {
			i.o.Log("%s: the image's %s does not run on this host (%v): pier will not offer %s", rt, rt, err, rt)
			continue
		}
		fmt.Fprintf(&gen, "\n[runtimes.%s]\npath = %q\n", rt, dst)
	}
	plugins, _ := filepath.Glob(filepath.Join(i.o.Payload, "cni", "bin", "*"))
	for _, p := range plugins {
		if err := put(p, filepath.Join(optDir, "cni", "bin", filepath.Base(p))); err != nil {
			return err
		}
	}
	if len(plugins) > 0 {
		fmt.Fprintf(&gen, "\n[cni]\nplugin_dirs = [\"/opt/cni/bin\", \"/usr/lib/cni\", %q]\n", filepath.Join(optDir, "cni", "bin"))
	}
	if err := put(filepath.Join(i.o.Payload, "share", "pier.service"), unitFile); err != nil {
		return err
	}
	// A pod network where the node has none.
	if !i.hasCNIConfig() || s.created(filepath.Join(cniConfDir, "10-pier.conflist")) {
		if err := put(filepath.Join(i.o.Payload, "share", "10-pier.conflist"), filepath.Join(cniConfDir, "10-pier.conflist")); err != nil {
			return err
		}
	}
	// Configuration: an operator's config.toml is never touched; the
	// installer's settings are drop-ins, merged over it in name order.
	if !i.h.exists(configFile) {
		if _, err := i.h.put(s, configFile, []byte(configPlaceholder), 0o644); err != nil {
			return err
		}
	}
	c, err := i.h.put(s, genDropIn, []byte(gen.String()), 0o644)
	if err != nil {
		return err
	}
	changed = changed || c
	c, err = i.installDropIns(s)
	if err != nil {
		return err
	}
	if changed || c {
		s.Restart = true
	}
	return nil
}

// installDropIns copies the chart's drop-ins to the host's config.d, and
// removes those it copied before that the chart no longer has.
func (i *Installer) installDropIns(s *state) (bool, error) {
	var names []string
	if i.o.ConfigDir != "" {
		entries, err := os.ReadDir(i.o.ConfigDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
		for _, e := range entries {
			// A ConfigMap's files are symbolic links into ..data.
			if strings.HasSuffix(e.Name(), ".toml") && !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
	}
	changed := false
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(i.o.ConfigDir, n))
		if err != nil {
			return false, err
		}
		c, err := i.h.put(s, filepath.Join(dropInDir, n), data, 0o644)
		if err != nil {
			return false, err
		}
		changed = changed || c
	}
	for _, old := range s.DropIns {
		if slices.Contains(names, old) {
			continue
		}
		p := filepath.Join(dropInDir, old)
		if b, ok := s.Backups[p]; ok {
			// The operator's file of that name comes back.
			fi, err := os.Stat(i.h.path(b))
			if err != nil {
				return false, err
			}
			if err := writeFrom(i.h.path(p), fileSource(i.h.path(b)), fi.Mode().Perm()); err != nil {
				return false, err
			}
			delete(s.Backups, p)
		} else if err := i.h.remove(p); err != nil {
			return false, err
		}
		s.Created = slices.DeleteFunc(s.Created, func(c string) bool { return c == p })
		changed = true
	}
	s.DropIns = names
	return changed, i.h.save(s)
}

// hostHas returns the host's own binary called name, from the PATH
// systemd gives services, or "".
func (i *Installer) hostHas(name string) string {
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(i.h.path(p)); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}

func (i *Installer) hasCNIConfig() bool {
	for _, pat := range []string{"*.conf", "*.conflist", "*.json"} {
		if m, _ := filepath.Glob(filepath.Join(i.h.path(cniConfDir), pat)); len(m) > 0 {
			return true
		}
	}
	return false
}

// chrootProbe runs the host's binary path with --version in the host's
// root, as pierd on the host will run it.
func (i *Installer) chrootProbe(ctx context.Context, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--version")
	if i.h.root != "/" && i.h.root != "" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: i.h.root}
		cmd.Dir = "/"
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// startPier enables and starts pier (restarts it when its files changed)
// and waits until its CRI socket serves.
func (i *Installer) startPier(ctx context.Context, s *state) error {
	if err := i.o.Systemd.Reload(ctx); err != nil {
		return err
	}
	if err := i.o.Systemd.Enable(ctx, unitName); err != nil {
		return err
	}
	start := i.o.Systemd.Start
	if s.Restart {
		start = i.o.Systemd.Restart
	}
	if err := start(ctx, unitName); err != nil {
		return err
	}
	s.Restart = false
	if err := i.h.save(s); err != nil {
		return err
	}
	v, hs, err := i.o.Runtimes.Ready(ctx, PierEndpoint)
	if err != nil {
		return err
	}
	i.o.Log("%s serves on %s with handlers %v", v, PierEndpoint, hs)
	return nil
}

// kubeletRequest is what the installer's host-side run (pier-install
// kubelet-apply, a transient unit) applies: the endpoints to write and the
// kubelet's unit to restart.
type kubeletRequest struct {
	Files kubeletFiles `json:"files"`
	Unit  string       `json:"unit"`
	Want  *endpoints   `json:"want"`
}

const requestFile = StateDir + "/kubelet-request.json"

// switchKubelet moves the kubelet to pier.
func (i *Installer) switchKubelet(ctx context.Context, s *state) error {
	s.enter("switch", "switch-back")
	// Switched before, but something (kubeadm upgrade, configuration
	// management) put the kubelet back: switch again.
	if s.done("switch/kubelet") {
		if cur, err := i.kubelet().read(i.h); err == nil && !i.h.same(cur.Runtime(), PierEndpoint) {
			i.o.Log("the kubelet uses %s again: switching it to pier once more", cur.Runtime())
			s.drop("switch/")
		}
	}
	if err := i.step(s, "kubelet-record", func() error {
		if s.Kubelet != nil {
			return nil
		}
		cur, err := i.kubelet().read(i.h)
		if err != nil {
			return err
		}
		// Copies of the kubelet's files as they were, for the operator
		// (uninstall restores the endpoints key by key, keeping what
		// changed since).
		before := filepath.Join(StateDir, "kubelet-before")
		if err := os.MkdirAll(i.h.path(before), 0o700); err != nil {
			return err
		}
		for _, f := range []string{i.o.KubeletConfig, i.o.KubeletFlags} {
			if f != "" && i.h.exists(f) {
				if err := writeFrom(i.h.path(filepath.Join(before, filepath.Base(f))), fileSource(i.h.path(f)), 0o600); err != nil {
					return err
				}
			}
		}
		if i.h.same(cur.Runtime(), PierEndpoint) {
			i.o.Log("the kubelet already uses pier: there is no previous runtime to switch back to on uninstall")
		} else if v, _, err := i.nodeRuntime(ctx, cur.Runtime()); err == nil {
			s.PreviousRuntime = v
		}
		s.Kubelet = cur
		return nil
	}); err != nil {
		return err
	}
	want := &endpoints{Config: map[string]*string{keyRuntime: ptr(PierEndpoint), keyImage: nil}}
	if s.Kubelet.Flags != nil {
		want.Flags = map[string]*string{flagImage: nil}
		if s.Kubelet.Flags[flagRuntime] != nil {
			want.Flags[flagRuntime] = ptr(PierEndpoint)
		}
	}
	return i.moveKubelet(ctx, s, "switch", want, func(version string) bool { return strings.HasPrefix(version, "pier://") }, s.Kubelet.Runtime())
}

// switchBack restores the kubelet's endpoints as recorded.
func (i *Installer) switchBack(ctx context.Context, s *state) error {
	s.enter("switch-back", "switch")
	name, _, _ := strings.Cut(s.PreviousRuntime, "://")
	if err := i.moveKubelet(ctx, s, "switch-back", s.Kubelet, func(version string) bool {
		return version != "" && !strings.HasPrefix(version, "pier://") && (name == "" || strings.HasPrefix(version, name+"://"))
	}, PierEndpoint); err != nil {
		return err
	}
	s.Kubelet, s.PreviousRuntime = nil, ""
	s.drop("switch/", "switch-back/", "kubelet-record")
	return i.h.save(s)
}

// moveKubelet taints the node, restarts the kubelet with want's endpoints
// from a transient unit on the host, waits until the node reports a
// runtime that is(version), untaints, and removes the pods left on the
// runtime at from. Its steps are named dir/step.
func (i *Installer) moveKubelet(ctx context.Context, s *state, dir string, want *endpoints, is func(version string) bool, from string) error {
	if i.h.same(want.Runtime(), from) {
		i.o.Log("the kubelet stays on %s", from)
		return nil
	}
	step := func(name string, f func() error) error { return i.step(s, dir+"/"+name, f) }
	if err := step("taint", func() error {
		if i.o.Cluster == nil {
			i.o.Log("no API server: the node is not tainted")
			return nil
		}
		// No new pod of pier's RuntimeClasses while the kubelet moves (the
		// label step puts it back when the kubelet lands on pier).
		if err := i.o.Cluster.SetLabel(ctx, i.o.NodeName, LabelRuntime, ""); err != nil {
			return err
		}
		return i.o.Cluster.SetTaint(ctx, i.o.NodeName, true)
	}); err != nil {
		return err
	}
	if err := step("kubelet", func() error { return i.applyKubelet(ctx, want) }); err != nil {
		return err
	}
	if err := step("kubelet-wait", func() error { return i.waitNode(ctx, is, want.Runtime()) }); err != nil {
		if dir != "switch" {
			return err
		}
		// The kubelet does not come up on pier: it goes back where it was,
		// the node is untainted, and the next try starts over.
		return errors.Join(err, i.rollback(s))
	}
	if err := step("untaint", func() error {
		if i.o.Cluster == nil {
			return nil
		}
		return i.o.Cluster.SetTaint(ctx, i.o.NodeName, false)
	}); err != nil {
		return err
	}
	// The kubelet has re-created its pods on the new runtime; their old
	// copies would run on unmanaged (ports, volumes, twice the work).
	return step("previous-pods", func() error {
		n, err := i.o.Runtimes.RemovePods(ctx, from)
		if n > 0 {
			i.o.Log("removed %d pods left on %s", n, from)
		}
		return err
	})
}

// applyKubelet writes want's endpoints into the kubelet's files and
// restarts it, from a transient unit on the host (pier-install
// kubelet-apply): a pod killed meanwhile never leaves it stopped.
func (i *Installer) applyKubelet(ctx context.Context, want *endpoints) error {
	req := kubeletRequest{Files: i.kubelet(), Unit: i.o.KubeletUnit, Want: want}
	if err := atomicfile.WriteJSON(i.h.path(requestFile), req); err != nil {
		return err
	}
	self := filepath.Join(optDir, "bin", "pier-install")
	if !i.h.exists(self) {
		return fmt.Errorf("%s is missing on the host", self)
	}
	return i.o.Systemd.RunOnHost(ctx, "pier-install-kubelet.service", []string{self, "kubelet-apply", "--request", requestFile})
}

// rollback puts the kubelet back on its recorded endpoints after a switch
// to pier that did not come up, and untaints the node. It has a time of
// its own: the installer's may be spent.
func (i *Installer) rollback(s *state) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	i.o.Log("the kubelet did not come up on pier: putting it back on %s", s.Kubelet.Runtime())
	if err := i.applyKubelet(ctx, s.Kubelet); err != nil {
		return err
	}
	s.drop("switch/")
	if err := i.h.save(s); err != nil {
		return err
	}
	if i.o.Cluster == nil {
		return nil
	}
	return i.o.Cluster.SetTaint(ctx, i.o.NodeName, false)
}

// waitNode waits until the node reports a ready runtime that satisfies
// is. Without an API server, until the kubelet is healthy again and has
// pods on the runtime at endpoint (its static pods, this installer's
// among them): its health alone would not tell which runtime it uses.
func (i *Installer) waitNode(ctx context.Context, is func(string) bool, endpoint string) error {
	if i.o.Cluster == nil {
		if err := waitHealthy(ctx, i.kubelet().healthz(i.h)); err != nil {
			return err
		}
		for {
			n, err := i.o.Runtimes.Pods(ctx, endpoint)
			if err == nil && n > 0 {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("the kubelet started no pod on %s (%v)", endpoint, err)
			case <-time.After(time.Second):
			}
		}
	}
	var last string
	for {
		v, hs, ready, err := i.o.Cluster.Runtime(ctx, i.o.NodeName)
		if err == nil && ready && is(v) {
			i.o.Log("node %s reports %s, handlers %v", i.o.NodeName, v, hs)
			return nil
		}
		last = fmt.Sprintf("runtime %q, ready %v, err %v", v, ready, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s did not report the runtime in time (last: %s)", i.o.NodeName, last)
		case <-time.After(2 * time.Second):
		}
	}
}

// nodeRuntime returns the version of the runtime at endpoint.
func (i *Installer) nodeRuntime(ctx context.Context, endpoint string) (string, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return i.o.Runtimes.Ready(ctx, endpoint)
}

// KubeletApply is the host-side run (pier-install kubelet-apply): it
// writes the requested endpoints into the kubelet's files and restarts
// the kubelet, unless they are already so and it runs.
func KubeletApply(ctx context.Context, hostRoot, request string, sys Systemd, log func(string, ...any)) error {
	h := &host{root: hostRoot, log: log}
	var req kubeletRequest
	if err := readJSON(h.path(request), &req); err != nil {
		return err
	}
	cur, err := req.Files.read(h)
	if err != nil {
		return err
	}
	if !cur.has(req.Want) {
		log("stopping %s", req.Unit)
		if err := sys.Stop(ctx, req.Unit); err != nil {
			// Never leave it stopped: it runs on as it was.
			return errors.Join(err, sys.Start(ctx, req.Unit))
		}
		if err := req.Files.apply(h, req.Want); err != nil {
			// The kubelet must not stay down for a file it could not write.
			_ = sys.Start(ctx, req.Unit)
			return err
		}
		log("%s now uses %s", req.Unit, req.Want.Runtime())
	}
	return sys.Start(ctx, req.Unit)
}

// has reports whether e already holds every setting of want.
func (e *endpoints) has(want *endpoints) bool {
	eq := func(a, b *string) bool { return (a == nil && b == nil) || (a != nil && b != nil && *a == *b) }
	for k, v := range want.Config {
		if !eq(e.Config[k], v) {
			return false
		}
	}
	for k, v := range want.Flags {
		if e.Flags != nil && !eq(e.Flags[k], v) {
			return false
		}
	}
	return true
}

func ptr(s string) *string { return &s }
