package main

import (
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/platform"
)

// logPlatforms says, at start-up and on SIGHUP, which platforms pods may
// run and which binfmt_misc registrations were found, usable or not.
func logPlatforms(p *platform.Policy) {
	info := p.Info()
	klog.InfoS("Platforms", "native", info["native"], "emulated", info["emulated"], "configured", info["emulatedConfigured"], "handlers", info["handlers"])
	for _, e := range p.Emulators() {
		if e.Usable() {
			klog.InfoS("Emulator registered with binfmt_misc", "name", e.Name, "platform", e.Platform, "interpreter", e.Interpreter, "flags", e.Flags)
		} else {
			klog.InfoS("Emulator registered with binfmt_misc but ignored", "name", e.Name, "platform", e.Platform, "reason", e.Ignored)
		}
	}
}
