// Command registry serves the e2e test images on loopback inside the node VM,
// which has no network: it starts testenv's registry, pushes the busybox
// image as e2e/busybox:latest, writes the registry's host:port to -addr-file
// and serves until it is signalled.
package main

import (
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/pier-runtime/pier/e2e/testenv"
)

func main() {
	addrFile := flag.String("addr-file", "", "file to write the registry's host:port to")
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
