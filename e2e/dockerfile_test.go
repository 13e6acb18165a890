package e2e

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// TestDockerfile builds pier's image from the Dockerfile with buildah
// (`make image`, from replicas of its base images: testenv.BuildPierImage),
// checks its configuration and layers, and has pier pull it and run each
// binary's --version as the image's user. PIER_IMAGE_ARCHIVE=/path/pier.tar
// also writes the image there as an OCI archive.
func TestDockerfile(t *testing.T) {
	const version = "1.2.3-e2e"
	img, err := testenv.BuildPierImage(testenv.PierImageOptions{
		Source: "..", Version: version, Archive: os.Getenv("PIER_IMAGE_ARCHIVE"), Logf: t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := img.Close(); err != nil {
			t.Error(err)
		}
	})
	checkImage(t, img, version)

	p := startPierd(t, "")
	start := time.Now()
	if out, err := p.Crictl("pull", img.Ref); err != nil {
		t.Fatalf("crictl pull: %v %s", err, out)
	}
	t.Logf("pull took %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	podID, pod := podWithLogs(t, p, "dockerfile")
	for _, c := range []struct {
		name string
		cmd  []string // nil: the entrypoint's
		args []string
		want []string // what the output holds
	}{
		{"install", nil, []string{"--version"}, []string{"pier-install " + version + "\n"}},
		{"pierd", []string{"/opt/pier/bin/pierd", "--version"}, nil, []string{"pierd " + version + "\n"}},
		{"shim", []string{"/opt/pier/bin/pier-shim", "--version"}, nil, []string{"pier-shim " + version + "\n"}},
		{"monitor", []string{"/opt/pier/bin/pier-shim-monitor", "--version"}, nil, []string{"pier-shim-monitor " + version + "\n"}},
		// The Dockerfile's RUNC_VERSION, built with seccomp.
		{"runc", []string{"/opt/pier/bin/runc", "--version"}, nil, []string{"runc version 1.5.3\n", "\nlibseccomp: 2."}},
		{"crun", []string{"/opt/pier/bin/crun", "--version"}, nil, []string{"crun version 1.", " +SECCOMP "}},
		{"user", []string{"id", "-u"}, nil, []string{"65532\n"}},
	} {
		cfg := containerConfig(c.name, c.cmd...)
		cfg.Image.Image, cfg.Args = img.Ref, c.args
		id := startContainer(t, p, podID, pod, cfg)
		st := waitState(t, p, id, runtimeapi.ContainerState_CONTAINER_EXITED)
		out := logText(t, filepath.Join(pod.LogDirectory, cfg.LogPath))
		for _, want := range c.want {
			if st.ExitCode != 0 || !strings.Contains(out, want) {
				t.Errorf("%s %v: exit %d, output %q, want %q in it", c.name, append(c.cmd, c.args...), st.ExitCode, out, want)
			}
		}
	}
	t.Logf("run took %v", time.Since(start).Round(time.Millisecond))

	// The same as a person at the node would: crictl runp, create, start,
	// logs, with the image's entrypoint.
	dir := t.TempDir()
	podJSON, ctrJSON := filepath.Join(dir, "pod.json"), filepath.Join(dir, "ctr.json")
	os.WriteFile(podJSON, []byte(`{"metadata":{"name":"dockerfile-crictl","namespace":"e2e","uid":"uid-dockerfile-crictl"},"log_directory":"`+dir+`","linux":{}}`), 0o644)
	os.WriteFile(ctrJSON, []byte(`{"metadata":{"name":"install"},"image":{"image":"`+img.Ref+`"},"args":["--version"],"log_path":"install.log","linux":{}}`), 0o644)
	out, err := p.Crictl("runp", podJSON)
	if err != nil {
		t.Fatalf("crictl runp: %v %s", err, out)
	}
	sandbox := strings.TrimSpace(out)
	if out, err = p.Crictl("create", sandbox, ctrJSON, podJSON); err != nil {
		t.Fatalf("crictl create: %v %s", err, out)
	}
	ctr := strings.TrimSpace(out)
	if out, err = p.Crictl("start", ctr); err != nil {
		t.Fatalf("crictl start: %v %s", err, out)
	}
	waitState(t, p, ctr, runtimeapi.ContainerState_CONTAINER_EXITED)
	if out, err = p.Crictl("logs", ctr); err != nil || out != "pier-install "+version+"\n" {
		t.Errorf("crictl logs of the entrypoint: %q %v, want %q", out, err, "pier-install "+version+"\n")
	}
}

// logText returns the text of a CRI log file's lines.
func logText(t *testing.T, path string) string {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSuffix(readLog(t, path), "\n"), "\n") {
		// 2006-01-02T15:04:05.999999999Z07:00 stdout F text
		if f := strings.SplitN(line, " ", 4); len(f) == 4 {
			b.WriteString(f[3] + "\n")
		}
	}
	return b.String()
}

// checkImage checks the image's configuration, its layout and that its
// layers hold nothing of the build stage, and in what the Dockerfile adds
// to its base, no apt lists or documents.
func checkImage(t *testing.T, img *testenv.PierImage, version string) {
	t.Helper()
	image := remoteImage(t, img.Ref)
	cfg, err := image.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cfg.Config
	if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/pier-install"}) || len(c.Cmd) != 0 {
		t.Errorf("user %q, entrypoint %q, cmd %q", c.User, c.Entrypoint, c.Cmd)
	}
	created, err := time.Parse(time.RFC3339, c.Labels["org.opencontainers.image.created"])
	if err != nil || !created.Equal(cfg.Created.Time) {
		t.Errorf("created: label %q (%v), image %v", c.Labels["org.opencontainers.image.created"], err, cfg.Created)
	}
	for label, want := range map[string]string{
		"title":       "^pier$",
		"source":      "^https://github.com/pier-runtime/pier$",
		"version":     "^" + regexp.QuoteMeta(version) + "$",
		"revision":    "^[0-9a-f]{40}$",
		"description": ".",
	} {
		if v := c.Labels["org.opencontainers.image."+label]; !regexp.MustCompile(want).MatchString(v) {
			t.Errorf("label %s = %q, want %s", label, v, want)
		}
	}

	baseLayers := map[v1.Hash]bool{}
	base, err := remoteImage(t, img.BaseRef).Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range base {
		d, _ := l.Digest()
		baseLayers[d] = true
	}
	layers, err := image.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	for _, l := range layers {
		d, _ := l.Digest()
		for _, h := range layerEntries(t, l) {
			f := strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
			files[f] = true
			if strings.HasPrefix(f, "usr/local/go/") || strings.HasPrefix(f, "go/") || strings.HasPrefix(f, "src/") ||
				strings.HasPrefix(f, "usr/lib/gcc/") || regexp.MustCompile(`^usr/bin/(gcc|cc|make|go)\b`).MatchString(f) {
				t.Errorf("layer %s has /%s, of the build stage", d, f)
			}
			dir, base := filepath.Split(f)
			if baseLayers[d] || h.Typeflag == tar.TypeDir || strings.HasPrefix(base, ".wh.") {
				continue
			}
			if strings.HasPrefix(dir, "var/lib/apt/lists/") || strings.HasPrefix(dir, "usr/share/man/") ||
				strings.HasPrefix(dir, "usr/share/doc/") && base != "copyright" || strings.HasPrefix(dir, "tmp/") {
				t.Errorf("layer %s has /%s", d, f)
			}
		}
	}
	for _, f := range []string{"usr/local/bin/pier-install", "opt/pier/bin/pierd", "opt/pier/bin/pier-shim", "opt/pier/bin/pier-shim-monitor",
		"opt/pier/bin/runc", "opt/pier/bin/crun", "opt/pier/cni/bin/bridge", "opt/pier/cni/bin/host-local", "opt/pier/cni/bin/loopback",
		"opt/pier/cni/bin/portmap", "opt/pier/share/pier.service", "opt/pier/share/10-pier.conflist"} {
		if !files[f] {
			t.Errorf("the image has no /%s", f)
		}
	}
	size := int64(0)
	for _, l := range layers {
		s, _ := l.Size()
		size += s
	}
	t.Logf("image %s: %d layers, %.1f MB compressed", img.Ref, len(layers), float64(size)/1e6)
}

func remoteImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	image, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	return image
}

// layerEntries returns the headers of a layer's entries.
func layerEntries(t *testing.T, l v1.Layer) []*tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var headers []*tar.Header
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return headers
		}
		if err != nil {
			t.Fatal(err)
		}
		headers = append(headers, h)
	}
}
