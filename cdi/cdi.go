// Package cdi resolves CDI (Container Device Interface) devices: device
// vendors describe their devices in spec files under a few directories
// (/etc/cdi, /var/run/cdi); a container asks for devices by fully
// qualified name ("vendor.com/class=name"), in the CRI's CDIDevices, in
// cdi.k8s.io/* annotations, or through an NRI plugin's adjustment; their
// device nodes, mounts, env and hooks are added to its OCI spec. The specs
// are read through tags.cncf.io/container-device-interface, which watches
// the directories and re-reads them when they change.
package cdi

import (
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/klog/v2"
	cdilib "tags.cncf.io/container-device-interface/pkg/cdi"
	"tags.cncf.io/container-device-interface/pkg/parser"
)

// ErrUnknownDevice is the error of a device no spec describes, and of a
// device name that is not fully qualified.
var ErrUnknownDevice = errors.New("unknown CDI device")

// Registry is the node's CDI devices, as the spec directories describe
// them now. A nil Registry knows no device.
type Registry struct {
	dirs  []string
	cache *cdilib.Cache
}

// New reads the specs of dirs, in increasing priority, and watches the
// directories (missing ones too) for changes. No dirs: nil, a registry
// that knows no device.
func New(dirs []string) (*Registry, error) {
	if len(dirs) == 0 {
		return nil, nil
	}
	cache, err := cdilib.NewCache(cdilib.WithSpecDirs(dirs...), cdilib.WithAutoRefresh(true))
	if err != nil {
		return nil, fmt.Errorf("CDI: %w", err)
	}
	r := &Registry{dirs: slices.Clone(dirs), cache: cache}
	for path, err := range r.readErrors() {
		klog.ErrorS(errors.New(err), "Ignoring an unreadable CDI spec or spec directory", "path", path)
	}
	klog.InfoS("CDI", "specDirs", dirs, "devices", cache.ListDevices())
	return r, nil
}

// Requested is the devices a container asks for: those named in the CRI's
// CDIDevices, then those of its cdi.k8s.io/* annotations, each once. A
// name that is not fully qualified is an error wrapping ErrUnknownDevice.
func Requested(names []string, annotations map[string]string) ([]string, error) {
	_, fromAnnotations, err := cdilib.ParseAnnotations(annotations)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnknownDevice, err)
	}
	sort.Strings(fromAnnotations) // map order
	var out []string
	for _, n := range append(slices.Clone(names), fromAnnotations...) {
		if !parser.IsQualifiedName(n) {
			return nil, fmt.Errorf("%w: %q is not a fully qualified CDI device name (vendor.com/class=name)", ErrUnknownDevice, n)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// Inject adds the edits of devices, and of the specs that describe them,
// to spec. A device no spec describes is an error wrapping
// ErrUnknownDevice that names it, and spec is then unchanged.
func (r *Registry) Inject(spec *specs.Spec, devices []string) error {
	if len(devices) == 0 {
		return nil
	}
	if r == nil {
		return fmt.Errorf("%w: %s: CDI is disabled on this node ([cdi] spec_dirs is empty)", ErrUnknownDevice, strings.Join(devices, ", "))
	}
	unknown, err := r.cache.InjectDevices(spec, devices...)
	if len(unknown) > 0 {
		return fmt.Errorf("%w: %s: no CDI spec in %s describes it", ErrUnknownDevice, strings.Join(unknown, ", "), strings.Join(r.dirs, ", "))
	}
	if err != nil {
		return fmt.Errorf("inject CDI devices %s: %w", strings.Join(devices, ", "), err)
	}
	return nil
}

// Info is what Status's verbose info says of CDI: the spec directories,
// the devices known, and the specs that could not be read, with why.
type Info struct {
	Enabled  bool              `json:"enabled"`
	SpecDirs []string          `json:"specDirs"`
	Devices  []string          `json:"devices"`
	Errors   map[string]string `json:"errors,omitempty"`
}

// Info describes the registry now; nil for a nil Registry.
func (r *Registry) Info() *Info {
	if r == nil {
		return nil
	}
	if err := r.cache.Refresh(); err != nil {
		klog.V(2).InfoS("CDI refresh", "err", err)
	}
	return &Info{SpecDirs: r.dirs, Devices: r.cache.ListDevices(), Errors: r.readErrors()}
}

// readErrors is why each spec file or directory that could not be read was
// not, by path; nil if none. A missing spec directory is no error: the
// node may have no device of its vendors yet, and the directory is watched
// for its creation.
func (r *Registry) readErrors() map[string]string {
	var out map[string]string
	for path, errs := range r.cache.GetErrors() {
		var kept []error
		for _, err := range errs {
			if err != nil && !(slices.Contains(r.dirs, path) && errors.Is(err, fs.ErrNotExist)) {
				kept = append(kept, err)
			}
		}
		if len(kept) > 0 {
			if out == nil {
				out = map[string]string{}
			}
			out[path] = errors.Join(kept...).Error()
		}
	}
	return out
}
