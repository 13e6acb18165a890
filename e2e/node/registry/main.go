// Command registry serves the e2e test images on loopback inside the node VM,
// which has no network: it starts testenv's registry, pushes the busybox
// image as e2e/busybox:latest (and each -image given), writes the registry's
// host:port to -addr-file and serves until it is signalled. With -save DIR
// it also writes the busybox image, and a pause image made of it, as docker
// archives named for this registry (for `ctr images import`: containerd's
// pods need a pause image, and the VM cannot pull one).
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/pier-runtime/pier/e2e/testenv"
)

type images []string

func (i *images) String() string     { return strings.Join(*i, ",") }
func (i *images) Set(s string) error { *i = append(*i, s); return nil }

func main() {
	addrFile := flag.String("addr-file", "", "file to write the registry's host:port to")
	save := flag.String("save", "", "directory to write busybox.tar and pause.tar to (docker archives)")
	var extra images
	flag.Var(&extra, "image", "PATH=FILE: also serve the docker archive FILE as PATH (repeatable)")
	flag.Parse()

	r, err := testenv.StartRegistry(testenv.RegistryOptions{})
	if err != nil {
		log.Fatal(err)
	}
	img, err := testenv.Busybox()
	if err != nil {
		log.Fatal(err)
	}
	if _, err := r.Push("e2e/busybox:latest", img); err != nil {
		log.Fatal(err)
	}
	for _, e := range extra {
		path, file, ok := strings.Cut(e, "=")
		if !ok {
			log.Fatalf("-image %q: want PATH=FILE", e)
		}
		x, err := tarball.ImageFromPath(file, nil)
		if err != nil {
			log.Fatalf("%s: %v", file, err)
		}
		if _, err := r.Push(path, x); err != nil {
			log.Fatalf("push %s: %v", path, err)
		}
		log.Printf("serving %s from %s", path, file)
	}
	if *save != "" {
		pause, err := mutate.Config(img, v1.Config{Entrypoint: []string{"/bin/sleep", "2147483647"}})
		if err != nil {
			log.Fatal(err)
		}
		for file, x := range map[string]struct {
			ref string
			img v1.Image
		}{"busybox.tar": {"e2e/busybox:latest", img}, "pause.tar": {"e2e/pause:1", pause}} {
			tag, err := name.NewTag(r.Ref(x.ref))
			if err != nil {
				log.Fatal(err)
			}
			if err := tarball.WriteToFile(filepath.Join(*save, file), tag, x.img); err != nil {
				log.Fatal(err)
			}
		}
	}
	if *addrFile != "" {
		if err := os.WriteFile(*addrFile+".tmp", []byte(r.Host()+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
		if err := os.Rename(*addrFile+".tmp", *addrFile); err != nil {
			log.Fatal(err)
		}
	}
	log.Printf("serving e2e/busybox:latest on %s", r.Host())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	r.Close()
}
