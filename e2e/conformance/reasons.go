package main

import (
	"fmt"
	"os"
	"strings"
)

// reasons says why specs do not pass yet and which area of work will make
// them pass: the first rule whose pattern is in a spec's name applies.
// `-update` writes CONFORMANCE.md from them.
var reasons = []struct{ pattern, why, area string }{
	{"public image with digest", "Unreproducible offline: critest pins an upstream digest (gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2…) that no local build can have.", "none (stays listed)"},
	{"AppArmor", "Skipped by critest: this host has no AppArmor (pier applies it where the kernel has it: `make e2e-node` checks that in its VM).", "none (acceptable skip)"},
	{"NRI", "Skipped: NRI is not implemented.", "NRI (later issue)"},
	{"benchmark", "Benchmarks; `make bench` measures pier, not the conformance run.", "none (acceptable skip)"},
	{"Streaming", "Exec, attach and port-forward.", "streaming"},
	{"Networking", "Checks run inside containers (DNS, hostname, port mappings).", "containers"},
	{"", "Not sorted yet: see the spec's log in _output/conformance.", "unknown"},
}

// writeConformance writes the list of specs of variant that do not pass.
func writeConformance(path, variant string, res *result) error {
	var b strings.Builder
	fmt.Fprintf(&b, `# critest conformance: what does not pass yet

`+"`make conformance`"+` runs critest v1.37.0 against pierd (see `+"`e2e/conformance`"+`);
`+"`e2e/conformance-baseline.txt`"+` lists what passes, per variant. This file lists
every spec of the %s variant that does not pass, why, and the area of work
that will make it pass. It is written by `+"`make conformance-update`"+` from the
reasons in `+"`e2e/conformance/reasons.go`"+`. The crun variants do not run on this
host kind (Debian's crun 1.8 refuses the hybrid cgroup layout). The
runc-websocket variant (WebSocket streaming) passes the same specs.

The security specs pass: seccomp (runtime default, localhost, unconfined),
capabilities, privileged containers, masked and read-only paths,
no_new_privs, run-as user and group, supplemental groups policies, user
namespaces and recursive read-only mounts. What pier enforces and how is in
the README's Security section; `+"`e2e/confine_test.go`"+` and
`+"`e2e/isolation_test.go`"+` check it from inside containers and as an
unprivileged host user. So do the stats and metrics specs and the image
volume specs. The specs listed below are all that does not pass: AppArmor
(this host has none), NRI (its own issue), the benchmarks and the
fixed-digest image.

Counts (%s): %d passed, %d failed, %d skipped.
`, variant, variant, len(res.passed), len(res.failed), len(res.skippedNames))
	type spec struct{ name, state string }
	groups := make([][]spec, len(reasons))
	add := func(name, state string) {
		for i, r := range reasons {
			if strings.Contains(name, r.pattern) {
				groups[i] = append(groups[i], spec{name, state})
				return
			}
		}
	}
	for _, n := range res.failed {
		add(n, "")
	}
	for _, n := range res.skippedNames {
		add(n, " (skipped)")
	}
	for i, r := range reasons {
		if len(groups[i]) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n## %s\n\nArea: %s.\n\n", r.why, r.area)
		for _, s := range groups[i] {
			fmt.Fprintf(&b, "- %s%s\n", s.name, s.state)
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
