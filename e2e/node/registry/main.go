// Command registry serves the e2e test images on loopback inside the node VM,
// which has no network: it starts testenv's registry, pushes the busybox
// image as e2e/busybox:latest (and each -image given, a docker or an OCI
// archive), writes the registry's host:port to -addr-file and serves until
// it is signalled. With -save DIR it also writes every image it serves,
// and a pause image made of busybox, as docker archives named for this
// registry (for `ctr images import`: containerd's pods need a pause image,
// and the VM cannot pull one): busybox.tar, pause.tar, and NAME.tar for
// each -image PATH (NAME its last element, without the tag).
package main

import (
	"archive/tar"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
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
	pause, err := mutate.Config(img, v1.Config{Entrypoint: []string{"/bin/sleep", "2147483647"}})
	if err != nil {
		log.Fatal(err)
	}
	type served struct {
		ref string
		img v1.Image
	}
	saved := map[string]served{"busybox.tar": {"e2e/busybox:latest", img}, "pause.tar": {"e2e/pause:1", pause}}
	for _, e := range extra {
		path, file, ok := strings.Cut(e, "=")
		if !ok {
			log.Fatalf("-image %q: want PATH=FILE", e)
		}
		x, err := loadArchive(file)
		if err != nil {
			log.Fatalf("%s: %v", file, err)
		}
		if _, err := r.Push(path, x); err != nil {
			log.Fatalf("push %s: %v", path, err)
		}
		n, _, _ := strings.Cut(filepath.Base(path), ":")
		saved[n+".tar"] = served{path, x}
		log.Printf("serving %s from %s", path, file)
	}
	if *save != "" {
		for file, x := range saved {
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

// loadArchive reads the image of a docker archive, or the one image of an
// OCI archive (an image layout in a tar, as buildah pushes oci-archive:).
func loadArchive(file string) (v1.Image, error) {
	if img, err := tarball.ImageFromPath(file, nil); err == nil {
		return img, nil
	}
	dir, err := os.MkdirTemp("", "oci-archive-")
	if err != nil {
		return nil, err
	}
	// The blobs are read lazily: the directory stays until the process
	// ends (the VM is thrown away).
	if err := untar(file, dir); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, err
	}
	for range 2 { // the layout's index, and an image index it may name
		m, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		if len(m.Manifests) != 1 {
			return nil, fmt.Errorf("%s holds %d manifests, want 1", file, len(m.Manifests))
		}
		d := m.Manifests[0]
		if !d.MediaType.IsIndex() {
			return idx.Image(d.Digest)
		}
		if idx, err = idx.ImageIndex(d.Digest); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%s: nested indexes", file)
}

func untar(file, dir string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			out, err := os.Create(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}
