// Command pierimage builds pier's container image from this tree's
// Dockerfile, offline (testenv.BuildPierImage: buildah, and base images
// made with debootstrap), and writes it as an OCI archive: the node VM's
// deploy phase (e2e/node) serves it from its registry and imports it into
// containerd.
package main

import (
	"flag"
	"log"
	"os/exec"
	"strings"

	"github.com/pier-runtime/pier/e2e/testenv"
)

func main() {
	out := flag.String("out", "", "the OCI archive to write")
	src := flag.String("source", ".", "pier's tree (a git checkout)")
	flag.Parse()
	if *out == "" {
		log.Fatal("-out is required")
	}
	version := "e2e"
	if b, err := exec.Command("git", "-C", *src, "describe", "--always", "--dirty").Output(); err == nil {
		version = strings.TrimSpace(string(b))
	}
	img, err := testenv.BuildPierImage(testenv.PierImageOptions{Source: *src, Version: version, Archive: *out, Logf: log.Printf})
	if err != nil {
		log.Fatal(err)
	}
	for _, t := range img.Timings {
		log.Printf("%s: %s", t.Step, t.Took.Round(1e8))
	}
	if err := img.Close(); err != nil {
		log.Fatal(err)
	}
}
