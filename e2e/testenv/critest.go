package testenv

import (
	"archive/tar"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// CritestRegistries are the registries critest pulls from. Conformance runs
// send them all to the test registry as mirrors; the replicas keep critest's
// repository paths and tags.
var CritestRegistries = []string{"registry.k8s.io", "gcr.io", "k8s.gcr.io"}

// CritestUnreproducible lists the images critest names by a fixed upstream
// digest: no local build can have that digest, so their specs cannot pass
// offline.
var CritestUnreproducible = []string{
	"gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf",
}

// binCacheDir keeps the compiled helpers of the replicas.
const binCacheDir = "/var/cache/pier-e2e/bin"

//go:embed csrc/*.c
var csrc embed.FS

// staticBinary compiles csrc/name.c into a static binary, cached by the
// hash of its source.
func staticBinary(name string) ([]byte, error) {
	src, err := csrc.ReadFile("csrc/" + name + ".c")
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(src)
	out := filepath.Join(binCacheDir, name+"-"+hex.EncodeToString(sum[:8]))
	if b, err := os.ReadFile(out); err == nil {
		return b, nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, err
	}
	srcPath := out + ".c"
	if err := os.WriteFile(srcPath, src, 0o644); err != nil {
		return nil, err
	}
	defer os.Remove(srcPath)
	if b, err := exec.Command("gcc", "-static", "-Os", "-s", "-o", out+".tmp", srcPath).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("gcc %s: %v: %s", name, err, b)
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return nil, err
	}
	return os.ReadFile(out)
}

// The web server stand-ins serve with busybox httpd. PID 1 of the nginx
// replica runs as "/nginx: master process/sh" so /proc/1/cmdline says
// "master process"; its child /usr/sbin/nginx has comm "nginx", like the
// real one, and writes /var/run/nginx.pid.
const (
	nginxEntrypoint = `#!/bin/sh
# nginx stand-in, master: start the worker and stop it on TERM/INT/QUIT
/usr/sbin/nginx "$@" &
child=$!
trap 'kill $child 2>/dev/null; wait $child; exit 0' TERM INT QUIT
wait $child
`
	nginxWorker = `#!/bin/sh
# nginx stand-in: busybox httpd on ${NGINX_PORT:-80} serving /usr/share/nginx/html
echo $$ >/var/run/nginx.pid
httpd -f -p "${NGINX_PORT:-80}" -h /usr/share/nginx/html &
child=$!
trap 'kill $child 2>/dev/null; exit 0' TERM INT QUIT
echo "nginx: stand-in (busybox httpd) listening on port ${NGINX_PORT:-80}"
wait $child
`
	nginxIndex = "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n<body><h1>Welcome to nginx!</h1></body></html>\n"
	httpdMain  = `#!/bin/sh
# httpd stand-in: busybox httpd on port 80 serving /usr/local/apache2/htdocs
httpd -f -p 80 -h /usr/local/apache2/htdocs &
child=$!
trap 'kill $child 2>/dev/null; exit 0' TERM INT QUIT
echo "httpd: stand-in (busybox httpd) listening on port 80"
wait $child
`
)

func nginxLayer() (*layer, error) {
	return gzipLayer(
		dirEntry("nginx: master process", 0o755),
		linkEntry(tar.TypeSymlink, "nginx: master process/sh", "/bin/busybox"),
		fileEntry("docker-entrypoint.sh", 0o755, []byte(nginxEntrypoint)),
		dirEntry("usr/sbin", 0o755),
		fileEntry("usr/sbin/nginx", 0o755, []byte(nginxWorker)),
		dirEntry("usr/share/nginx/html", 0o755),
		fileEntry("usr/share/nginx/html/index.html", 0o644, []byte(nginxIndex)),
		dirEntry("var/log/nginx", 0o755),
	)
}

func httpdLayer() (*layer, error) {
	return gzipLayer(
		dirEntry("usr/local/apache2/htdocs", 0o755),
		fileEntry("usr/local/apache2/htdocs/index.html", 0o644, []byte("<html><body><h1>It works!</h1></body></html>\n")),
		dirEntry("usr/local/bin", 0o755),
		fileEntry("usr/local/bin/httpd-foreground", 0o755, []byte(httpdMain)),
	)
}

func nnpLayer() (*layer, error) {
	bin, err := staticBinary("nnp")
	if err != nil {
		return nil, err
	}
	return gzipLayer(dirEntry("usr/local/bin", 0o755), fileEntry("usr/local/bin/nnp", 0o4755, bin))
}

// predefinedGroupLayer adds default-user (1000:1000), also a member of
// group-defined-in-image (50000).
func predefinedGroupLayer() (*layer, error) {
	passwd := etcPasswd + "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"
	return gzipLayer(
		dirEntry("etc", 0o755),
		fileEntry("etc/passwd", 0o644, []byte(passwd)),
		fileEntry("etc/group", 0o644, []byte(etcGroup+"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")),
		fileEntry("etc/shadow", 0o640, []byte(shadow(passwd))),
		dirEntry("home/default-user", 0o755),
	)
}

// pauseImage is the pause replica: a static binary that sleeps until
// signalled and reaps children, plus a version marker.
func pauseImage(version string) (v1.Image, error) {
	bin, err := staticBinary("pause")
	if err != nil {
		return nil, err
	}
	l, err := gzipLayer(fileEntry("pause", 0o755, bin), dirEntry("etc", 0o755), fileEntry("etc/pause-version", 0o644, []byte("harness-pause "+version+"\n")))
	if err != nil {
		return nil, err
	}
	return newImage(linuxAMD64, false, v1.Config{Entrypoint: []string{"/pause"}, User: "65535:65535"}, l)
}

func marker(name string) func() (*layer, error) {
	return func() (*layer, error) { return markerLayer(name, name+"\n") }
}

// PushCritestImages builds the offline replicas of every Linux image
// critest v1.37.0 pulls and pushes them to r under critest's repository
// paths and tags (the registry part of each name goes to r through pier's
// mirror configuration).
func PushCritestImages(r *Registry) error {
	const e2e, staging = "e2e-test-images/", "k8s-staging-cri-tools/"
	sh := []string{"sh"}
	nginx := []string{"/nginx: master process/sh", "/docker-entrypoint.sh"}
	port := func(p string) map[string]struct{} { return map[string]struct{}{p: {}} }
	images := []struct {
		path   string
		cfg    v1.Config
		layers []func() (*layer, error)
		tags   []string // more tags of the same image
	}{
		{path: e2e + "busybox:1.29-2", cfg: v1.Config{Cmd: sh}},
		{path: e2e + "nginx:1.14-2", cfg: v1.Config{Entrypoint: nginx, ExposedPorts: port("80/tcp")}, layers: []func() (*layer, error){nginxLayer}},
		{path: staging + "hostnet-nginx-amd64:latest", cfg: v1.Config{Entrypoint: nginx, Env: []string{"NGINX_PORT=12003"}, ExposedPorts: port("12003/tcp")}, layers: []func() (*layer, error){nginxLayer}},
		{path: e2e + "httpd:2.4.39-4", cfg: v1.Config{Cmd: []string{"/usr/local/bin/httpd-foreground"}, ExposedPorts: port("80/tcp")}, layers: []func() (*layer, error){httpdLayer}},
		{path: e2e + "nonewprivs:1.3", cfg: v1.Config{Cmd: []string{"/usr/local/bin/nnp"}, User: "1000"}, layers: []func() (*layer, error){nnpLayer}},
		{path: staging + "test-image-user-uid:latest", cfg: v1.Config{Cmd: sh, User: "1002"}},
		{path: staging + "test-image-user-username:latest", cfg: v1.Config{Cmd: sh, User: "www-data"}},
		{path: staging + "test-image-user-uid-group:latest", cfg: v1.Config{Cmd: sh, User: "1003:1004"}},
		{path: staging + "test-image-user-username-group:latest", cfg: v1.Config{Cmd: sh, User: "www-data:1004"}},
		{path: staging + "test-image-predefined-group:latest", cfg: v1.Config{Cmd: sh, User: "1000"}, layers: []func() (*layer, error){predefinedGroupLayer}},
		{path: staging + "test-image-latest:latest", cfg: v1.Config{Cmd: sh}, layers: []func() (*layer, error){marker("test-image-latest")}},
		{path: staging + "test-image-tag:test", cfg: v1.Config{Cmd: sh}, layers: []func() (*layer, error){marker("test-image-tag")}, tags: []string{"all"}},
		{path: staging + "test-image-tags:1", cfg: v1.Config{Cmd: sh}, layers: []func() (*layer, error){marker("test-image-tags")}, tags: []string{"2", "3"}},
		{path: staging + "test-image-1:latest", cfg: v1.Config{Cmd: sh}, layers: []func() (*layer, error){marker("test-image-1")}},
		{path: staging + "test-image-2:latest", cfg: v1.Config{Cmd: sh}, layers: []func() (*layer, error){marker("test-image-2")}},
		{path: staging + "test-image-3:latest", cfg: v1.Config{Cmd: sh}, layers: []func() (*layer, error){marker("test-image-3")}},
		// The digest spec names a fixed upstream digest (CritestUnreproducible);
		// the repository exists so that its failure says so.
		{path: staging + "test-image-digest:latest", cfg: v1.Config{Cmd: sh}, layers: []func() (*layer, error){marker("test-image-digest")}},
	}
	for _, im := range images {
		img, err := busyboxPlus(im.cfg, im.layers...)
		if err != nil {
			return fmt.Errorf("build %s: %w", im.path, err)
		}
		if err := pushTags(r, im.path, img, im.tags...); err != nil {
			return err
		}
	}
	for _, v := range []string{"3.9", "3.10"} {
		img, err := pauseImage(v)
		if err != nil {
			return err
		}
		if err := pushTags(r, "pause:"+v, img); err != nil {
			return err
		}
	}
	return nil
}

// pushTags pushes img as path ("repo:tag") and under more tags of the repo.
func pushTags(r *Registry, path string, img v1.Image, more ...string) error {
	if _, err := r.Push(path, img); err != nil {
		return fmt.Errorf("push %s: %w", path, err)
	}
	repo := path[:strings.LastIndex(path, ":")]
	for _, t := range more {
		if _, err := r.Push(repo+":"+t, img); err != nil {
			return fmt.Errorf("push %s:%s: %w", repo, t, err)
		}
	}
	return nil
}
