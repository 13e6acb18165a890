package container

import (
	"testing"

	"github.com/pier-runtime/pier/oci"
)

func TestSetRuntimesKeepsExistingContainersRuntime(t *testing.T) {
	old := &oci.Runtime{Name: "runc", Path: "/old/runc"}
	m := &Manager{opts: Options{Runtimes: map[string]*oci.Runtime{"runc": old}}}
	c := &Container{Handler: "runc", rt: m.offered("runc")}
	unusable := &Container{Handler: "crun"} // loaded while crun could not run

	changed, crun := &oci.Runtime{Name: "runc", Path: "/new/runc"}, &oci.Runtime{Name: "crun"}
	m.SetRuntimes(map[string]*oci.Runtime{"runc": changed, "crun": crun})
	if m.offered("runc") != changed || m.runtimeOf(c) != old || m.runtimeOf(unusable) != crun {
		t.Fatal("a changed handler: new containers get the new runtime, existing ones keep theirs")
	}
	m.SetRuntimes(map[string]*oci.Runtime{})
	if m.offered("runc") != nil || m.runtimeOf(c) != old {
		t.Fatal("a removed handler: not offered, its containers keep their runtime")
	}
}
