package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/pier-runtime/pier/internal/hostlock"
	"github.com/pier-runtime/pier/internal/mountinfo"
)

// PierImageCacheDir holds the Debian roots of the base images BuildPierImage
// makes, one directory per recipe (reused when present).
const PierImageCacheDir = "/var/cache/pier-e2e/dockerfile"

// debianSuite is the release of the published base images the Dockerfile
// pins (golang:*-bookworm, debian:bookworm-slim).
const debianSuite = "bookworm"

// PierImageOptions say what BuildPierImage builds.
type PierImageOptions struct {
	// Source is pier's tree, a git checkout: the files git knows of (tracked,
	// and untracked but not ignored) are built, as from a fresh clone.
	Source string
	// Version is the build's VERSION; Source's commit is its REVISION and
	// the commit's time its SOURCE_DATE_EPOCH.
	Version string
	// Archive, when set, is where the image is also written as an OCI
	// archive (for `ctr images import` and the like, on a node without a
	// registry).
	Archive string
	// Logf, when set, gets the progress.
	Logf func(format string, args ...any)
}

// PierImage is pier's image built from its Dockerfile, served by a
// registry of its own on loopback (blobs on disk) until Close.
type PierImage struct {
	Ref      string // host:port/pier/pier@sha256:... in Registry
	BaseRef  string // the final stage's base, in Registry
	Registry *Registry
	Timings  []Timing
	dir      string
}

// Timing is how long a step of BuildPierImage took.
type Timing struct {
	Step string
	Took time.Duration
}

// Close stops the image's registry and removes its blobs.
func (i *PierImage) Close() error {
	return errors.Join(i.Registry.Close(), os.RemoveAll(i.dir))
}

// BuildPierImage builds pier's image from opts.Source's Dockerfile with
// buildah, offline but for the Go module proxy and the Debian mirror of the
// host's apt, and pushes it to a registry on loopback. The Dockerfile's
// base images are replicas made here: `debootstrap --variant=minbase` of
// Debian bookworm from the host's mirror (cached in PierImageCacheDir), as
// is for bookworm-slim, and with the build stage's packages and the host's
// Go toolchain (and trusted certificates) for golang. buildah runs with
// storage of its own, which is removed before this returns, and with
// chroot isolation (no cgroups, the host's network). Needs root, buildah,
// debootstrap and make.
//
// The e2e test TestDockerfile uses it, and so can whoever needs the image
// on a machine without network: with opts.Archive set, the image is
// written there as an OCI archive.
func BuildPierImage(opts PierImageOptions) (_ *PierImage, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	img := &PierImage{}
	step := func(name string, start time.Time) {
		img.Timings = append(img.Timings, Timing{name, time.Since(start)})
		logf("pier image: %s took %v", name, time.Since(start).Round(time.Millisecond))
	}
	// Big (buildah's storage, the registry's blobs): not in a /tmp that may be in memory.
	if img.dir, err = os.MkdirTemp("/var/tmp", "pier-image-"); err != nil {
		return nil, err
	}
	blobs := filepath.Join(img.dir, "blobs")
	if err = os.Mkdir(blobs, 0o700); err == nil {
		img.Registry, err = StartRegistry(RegistryOptions{BlobDir: blobs})
	}
	if err != nil {
		os.RemoveAll(img.dir)
		return nil, err
	}
	defer func() {
		if err != nil {
			img.Close()
		}
	}()

	// One build at a time on the host: buildah makes buildahHostPaths,
	// which a build removes when it found them missing.
	if err := os.MkdirAll(PierImageCacheDir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := hostlock.LockDir(PierImageCacheDir)
	if err != nil {
		return nil, err
	}
	defer unlock()

	start := time.Now()
	roots, built, err := debianRoots(opts.Source, logf)
	if err != nil {
		return nil, err
	}
	if built {
		step("debootstrap", start)
	}

	b, err := newBuildah(filepath.Join(img.dir, "buildah"), logf)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, b.close()) }()

	start = time.Now()
	slim, err := b.base(img.Registry, "pier-e2e/bookworm-slim", roots.slim, nil)
	if err != nil {
		return nil, err
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOROOT: %w", err)
	}
	golang, err := b.base(img.Registry, "pier-e2e/golang", roots.golang, func(ctr string) error {
		if _, err := b.run("copy", ctr, strings.TrimSpace(string(goroot)), "/usr/local/go"); err != nil {
			return err
		}
		// The Go module proxy may be reached through a TLS proxy the host trusts.
		if _, err := os.Stat(hostCertificates); err == nil {
			if _, err := b.run("copy", ctr, hostCertificates, hostCertificates); err != nil {
				return err
			}
		}
		_, err := b.run("config", "--env", "PATH=/go/bin:/usr/local/go/bin:"+debianPath,
			"--env", "GOPATH=/go", "--env", "GOTOOLCHAIN=local", "--workingdir", "/go", ctr)
		return err
	})
	if err != nil {
		return nil, err
	}
	img.BaseRef = slim
	step("base images", start)

	start = time.Now()
	src := filepath.Join(img.dir, "src")
	revision, epoch, err := copySource(opts.Source, src)
	if err != nil {
		return nil, err
	}
	name := "localhost/pier/pier:" + opts.Version
	flags := "--isolation chroot --tls-verify=false --build-arg GO_IMAGE=" + golang + " --build-arg BASE_IMAGE=" + slim
	cmd := exec.Command("make", "-C", src, "image", "IMAGE="+name, "VERSION="+opts.Version,
		"REVISION="+revision, "SOURCE_DATE_EPOCH="+epoch, "IMAGE_FLAGS="+flags)
	cmd.Env = b.env()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("make image: %w\n%s", err, tail(out, 60))
	}
	step("build", start)

	start = time.Now()
	if img.Ref, err = b.push(img.Registry, name, "pier/pier:"+opts.Version); err != nil {
		return nil, err
	}
	if opts.Archive != "" {
		if _, err := b.run("push", name, "oci-archive:"+opts.Archive+":pier:"+opts.Version); err != nil {
			return nil, err
		}
		logf("pier image: wrote %s", opts.Archive)
	}
	step("push", start)
	return img, nil
}

// hostCertificates is the host's bundle of trusted certificates (Debian's).
const hostCertificates = "/etc/ssl/certs/ca-certificates.crt"

// debianPath is the PATH of Debian's images.
const debianPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// roots are the tar files of the base images' root file systems.
type roots struct{ slim, golang string }

// debianRoots returns the Debian roots of the base images, made by
// debootstrap unless cached, and whether they were made now. The golang
// root has the packages the Dockerfile's build stage installs (its pkgs=
// list), so that the build needs no mirror. The cache key is the recipe: a
// new one replaces the old.
func debianRoots(source string, logf func(string, ...any)) (_ roots, built bool, err error) {
	dockerfile, err := os.ReadFile(filepath.Join(source, "Dockerfile"))
	if err != nil {
		return roots{}, false, err
	}
	m := regexp.MustCompile(`pkgs="([^"]+)"`).FindSubmatch(dockerfile)
	if m == nil {
		return roots{}, false, errors.New("Dockerfile: no pkgs=\"...\" list of the build stage's packages")
	}
	packages := strings.Join(strings.Fields(string(m[1])), ",")
	// Change the version when the steps below change.
	recipe := fmt.Sprintf("v1 debootstrap --variant=minbase %s; golang: --include=%s; without apt archives and lists", debianSuite, packages)
	sum := sha256.Sum256([]byte(recipe))
	dir := filepath.Join(PierImageCacheDir, hex.EncodeToString(sum[:8]))
	r := roots{slim: filepath.Join(dir, "slim.tar"), golang: filepath.Join(dir, "golang.tar")}
	if _, err := os.Stat(r.golang); err == nil {
		return r, false, nil
	}

	out, err := exec.Command(filepath.Join(source, "e2e/node/debian-mirror.sh"), debianSuite).Output()
	mirror, _, _ := strings.Cut(string(out), "\n")
	if err != nil || mirror == "" {
		return roots{}, false, fmt.Errorf("no %s mirror in the host's apt sources (%v)", debianSuite, err)
	}
	work, err := os.MkdirTemp(PierImageCacheDir, "build-")
	if err != nil {
		return roots{}, false, err
	}
	// debootstrap mounts /proc and /sys in the root while it installs:
	// never remove through a mount a failure left.
	defer func() {
		if uerr := mountinfo.UnmountUnder(work); uerr != nil {
			err = errors.Join(err, uerr)
			return
		}
		os.RemoveAll(work)
	}()
	if err := os.Mkdir(filepath.Join(work, "out"), 0o755); err != nil {
		return roots{}, false, err
	}
	for _, base := range []struct{ name, include string }{{"slim", ""}, {"golang", packages}} {
		logf("pier image: debootstrap %s root (%s)", base.name, recipe)
		root := filepath.Join(work, base.name)
		args := []string{"--variant=minbase", "--cache-dir=" + filepath.Join(work, "debs")}
		if base.include != "" {
			args = append(args, "--include="+base.include)
		}
		args = append(args, debianSuite, root, mirror)
		if err := os.MkdirAll(filepath.Join(work, "debs"), 0o755); err != nil {
			return roots{}, false, err
		}
		if out, err := exec.Command("debootstrap", args...).CombinedOutput(); err != nil {
			debootstrapLog, _ := os.ReadFile(filepath.Join(root, "debootstrap/debootstrap.log"))
			return roots{}, false, fmt.Errorf("debootstrap %s: %w\n%s\n%s", base.name, err, tail(out, 30), tail(debootstrapLog, 30))
		}
		if err := mountinfo.UnmountUnder(root); err != nil {
			return roots{}, false, err
		}
		for _, g := range []string{"var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*"} {
			files, _ := filepath.Glob(filepath.Join(root, g))
			for _, f := range files {
				os.RemoveAll(f)
			}
		}
		if out, err := exec.Command("tar", "--numeric-owner", "-C", root, "-cf", filepath.Join(work, "out", base.name+".tar"), ".").CombinedOutput(); err != nil {
			return roots{}, false, fmt.Errorf("tar %s: %w %s", base.name, err, out)
		}
	}
	old, _ := filepath.Glob(filepath.Join(PierImageCacheDir, "*"))
	if err := os.Rename(filepath.Join(work, "out"), dir); err != nil {
		// Another process may have made them first.
		if _, statErr := os.Stat(r.golang); statErr != nil {
			return roots{}, false, err
		}
	}
	for _, o := range old {
		if o != dir && o != work && !strings.HasPrefix(filepath.Base(o), "build-") {
			os.RemoveAll(o)
		}
	}
	return r, true, nil
}

// copySource copies the files git knows of in source to dst and returns
// the commit and its time.
func copySource(source, dst string) (revision, epoch string, err error) {
	git := func(args ...string) (string, error) {
		out, err := exec.Command("git", append([]string{"-C", source}, args...)...).Output()
		if err != nil {
			return "", fmt.Errorf("git %s in %s (pier's image is built from a checkout): %w", strings.Join(args, " "), source, err)
		}
		return string(out), nil
	}
	list, err := git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
	if err != nil {
		return "", "", err
	}
	for _, name := range strings.Split(strings.TrimSuffix(list, "\x00"), "\x00") {
		if err := copyFile(filepath.Join(source, name), filepath.Join(dst, name)); err != nil {
			return "", "", err
		}
	}
	if revision, err = git("rev-parse", "HEAD"); err != nil {
		return "", "", err
	}
	if epoch, err = git("log", "-1", "--format=%ct"); err != nil {
		return "", "", err
	}
	return strings.TrimSpace(revision), strings.TrimSpace(epoch), nil
}

// copyFile copies a regular file (with its permissions) or a symbolic
// link; a file deleted from the work tree is skipped.
func copyFile(src, dst string) error {
	fi, err := os.Lstat(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	return errors.Join(err, out.Close())
}

// buildah runs buildah with storage of its own under dir (through
// CONTAINERS_STORAGE_CONF, which `make image` inherits) and its temporary
// files there.
type buildah struct {
	dir   string
	logf  func(string, ...any)
	added []string // host paths buildah made outside its storage, removed by close
}

// buildahHostPaths are what buildah makes outside its storage whatever its
// configuration: the blob info cache and the network backend's run directory.
var buildahHostPaths = []string{"/var/lib/containers/cache", "/run/containers/networks"}

func newBuildah(dir string, logf func(string, ...any)) (*buildah, error) {
	b := &buildah{dir: dir, logf: logf}
	for _, p := range buildahHostPaths {
		// The first missing ancestor, if any, is buildah's to make and ours to remove.
		for q := p; q != "/"; q = filepath.Dir(q) {
			if _, err := os.Stat(q); err == nil {
				break
			}
			if _, err := os.Stat(filepath.Dir(q)); err == nil {
				b.added = append(b.added, q)
			}
		}
	}
	conf := fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = %q\n", filepath.Join(dir, "root"), filepath.Join(dir, "run"))
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	return b, os.WriteFile(filepath.Join(dir, "storage.conf"), []byte(conf), 0o644)
}

func (b *buildah) env() []string {
	return append(os.Environ(), "CONTAINERS_STORAGE_CONF="+filepath.Join(b.dir, "storage.conf"), "TMPDIR="+filepath.Join(b.dir, "tmp"))
}

// run runs buildah and returns its standard output, trimmed.
func (b *buildah) run(args ...string) (string, error) {
	cmd := exec.Command("buildah", args...)
	cmd.Env = b.env()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if d := time.Since(start); d > 2*time.Second {
		b.logf("pier image: buildah %s took %v", args[0], d.Round(time.Millisecond))
	}
	if err != nil {
		return "", fmt.Errorf("buildah %s: %w\n%s", strings.Join(args, " "), err, tail(stderr.Bytes(), 30))
	}
	return strings.TrimSpace(string(out)), nil
}

// base makes an image of a root file system tar (and whatever more add
// does to its working container), pushes it to reg and returns its
// reference there, by digest.
func (b *buildah) base(reg *Registry, name, rootTar string, add func(ctr string) error) (string, error) {
	ctr, err := b.run("from", "--pull=never", "scratch")
	if err != nil {
		return "", err
	}
	if _, err := b.run("add", ctr, rootTar, "/"); err != nil {
		return "", err
	}
	if _, err := b.run("config", "--env", "PATH="+debianPath, "--cmd", "bash", ctr); err != nil {
		return "", err
	}
	if add != nil {
		if err := add(ctr); err != nil {
			return "", err
		}
	}
	// Timestamps of 0: the same roots make the same image, and so the same
	// Dockerfile and source make the same image of pier.
	if _, err := b.run("commit", "--rm", "-q", "--timestamp", "0", ctr, "localhost/"+name); err != nil {
		return "", err
	}
	// Uncompressed: quicker to push and to pull, and only the build reads them.
	return b.push(reg, "localhost/"+name, name+":base", "--disable-compression")
}

// push pushes a local image to reg as path and returns its reference by digest.
func (b *buildah) push(reg *Registry, image, path string, flags ...string) (string, error) {
	digestFile := filepath.Join(b.dir, "digest")
	if _, err := b.run(append(append([]string{"push", "--tls-verify=false", "--digestfile", digestFile}, flags...), image, "docker://"+reg.Ref(path))...); err != nil {
		return "", err
	}
	digest, err := os.ReadFile(digestFile)
	if err != nil {
		return "", err
	}
	repo, _, _ := strings.Cut(path, ":")
	return reg.Ref(repo + "@" + strings.TrimSpace(string(digest))), nil
}

// close removes buildah's containers, images and storage, and what it made
// on the host.
func (b *buildah) close() error {
	_, err1 := b.run("rm", "--all")
	_, err2 := b.run("rmi", "--all", "--force")
	err := errors.Join(err1, err2, mountinfo.UnmountUnder(b.dir))
	if err == nil {
		err = os.RemoveAll(b.dir)
	}
	for _, p := range b.added {
		os.RemoveAll(p)
	}
	return err
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
