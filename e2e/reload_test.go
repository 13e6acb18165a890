package e2e

import (
	"strings"
	"testing"
)

// TestConfigReload adds a registry mirror and a pinned image in a drop-in
// and reloads pierd with SIGHUP; then a bad drop-in, which must change
// nothing and name the file and the key.
func TestConfigReload(t *testing.T) {
	p := startPierd(t, "")
	bb := reg.Ref(busyboxImg)
	mustPull(t, p, bb)
	if imageStatus(t, p, bb).Image.Pinned {
		t.Fatal("pinned before any configuration pins it")
	}
	// localhost:1 does not exist: only a mirror can serve it.
	mirrored := "localhost:1/" + busyboxImg
	if _, err := pull(t, p, mirrored, nil); err == nil {
		t.Fatal("pulled from localhost:1 without a mirror")
	}

	if err := p.DropIn("50-ops.toml", `
[image]
pinned_images = ["`+bb+`"]
[registries."localhost:1"]
mirrors = ["http://`+reg.Host()+`"]
[streaming]
address = "127.0.0.1:1"
`); err != nil {
		t.Fatal(err)
	}
	if err := p.Reload("Configuration reloaded"); err != nil {
		t.Fatal(err)
	}
	if !imageStatus(t, p, bb).Image.Pinned {
		t.Error("the pin of the drop-in did not take effect")
	}
	mustPull(t, p, mirrored)
	log := p.LogText()
	for _, want := range []string{`applied=["registries","image.pinned_images"]`, `needsRestart=["streaming.address"]`, `key="streaming.address"`} {
		if !strings.Contains(log, want) {
			t.Errorf("the reload did not log %s", want)
		}
	}

	// A bad drop-in, and a change to the good one that would unpin: the
	// reload fails as a whole.
	if err := p.DropIn("50-ops.toml", "[image]\npinned_images = []\n"); err != nil {
		t.Fatal(err)
	}
	if err := p.DropIn("60-bad.toml", "[registries.\"localhost:1\"]\nmirors = []\n"); err != nil {
		t.Fatal(err)
	}
	if err := p.Reload("Configuration reload failed"); err != nil {
		t.Fatal(err)
	}
	if !imageStatus(t, p, bb).Image.Pinned {
		t.Error("a failed reload unpinned the image")
	}
	mustPull(t, p, mirrored)
	if log := p.LogText(); !strings.Contains(log, `60-bad.toml: unknown key registries.\"localhost:1\".mirors`) {
		t.Errorf("the failed reload does not name the file and the key:\n%s", log[strings.LastIndex(log, "SIGHUP"):])
	}

	// Fixed: the unpin applies.
	if err := p.DropIn("60-bad.toml", ""); err != nil {
		t.Fatal(err)
	}
	if err := p.Reload("Configuration reloaded"); err != nil {
		t.Fatal(err)
	}
	if imageStatus(t, p, bb).Image.Pinned {
		t.Error("still pinned after the drop-in unpinned it")
	}
}
