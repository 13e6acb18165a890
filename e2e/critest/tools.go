//go:build tools

// Package critest pins the versions of the CRI validation suite (critest,
// from cri-tools) and of the ginkgo runner that pier's conformance run
// builds. It is a module of its own so that pier's go.mod stays free of
// cri-tools' dependencies.
package critest

import (
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "sigs.k8s.io/cri-tools/cmd/critest"
)
