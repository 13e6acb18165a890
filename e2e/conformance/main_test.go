package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestBaselineRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "baseline.txt")
	want := map[string][]string{"runc": {"[k8s.io] a [Conformance]", "[k8s.io] b"}, "runc-websocket": {"[k8s.io] a [Conformance]"}}
	if err := writeBaseline(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := readBaseline(path)
	if err != nil || !slices.Equal(got["runc"], want["runc"]) || !slices.Equal(got["runc-websocket"], want["runc-websocket"]) {
		t.Fatalf("read back %v, %v", got, err)
	}
	os.WriteFile(path, []byte("runc no tab\n"), 0o644)
	if _, err := readBaseline(path); err == nil {
		t.Fatal("a line without a tab was accepted")
	}
}

func TestReadReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.json")
	os.WriteFile(path, []byte(`[{"SpecReports":[
	 {"ContainerHierarchyTexts":["[k8s.io] Image Manager","public image"],"LeafNodeText":"should pull","LeafNodeType":"It","State":"passed"},
	 {"ContainerHierarchyTexts":["[k8s.io] PodSandbox"],"LeafNodeText":"should run","LeafNodeType":"It","State":"failed"},
	 {"ContainerHierarchyTexts":["[k8s.io] X"],"LeafNodeText":"times out","LeafNodeType":"It","State":"timedout"},
	 {"ContainerHierarchyTexts":["[k8s.io] AppArmor"],"LeafNodeText":"skips","LeafNodeType":"It","State":"skipped"},
	 {"LeafNodeType":"SynchronizedBeforeSuite","State":"passed"}]}]`), 0o644)
	r, err := readReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.passed, []string{"[k8s.io] Image Manager public image should pull"}) || len(r.failed) != 2 || len(r.skippedNames) != 1 {
		t.Fatalf("report: %+v", r)
	}
}
