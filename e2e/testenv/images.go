package testenv

import (
	"archive/tar"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PathEnv is the PATH every test image sets.
const PathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

var (
	linuxAMD64   = v1.Platform{OS: "linux", Architecture: "amd64"}
	linuxARM64   = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	windowsAMD64 = v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.17763.1"}
	shCmd        = v1.Config{Cmd: []string{"sh"}}
)

// newImage returns an image of layers for platform with configuration cfg
// (plus PathEnv), with OCI media types if oci, else Docker ones.
func newImage(platform v1.Platform, oci bool, cfg v1.Config, layers ...v1.Layer) (v1.Image, error) {
	base := empty.Image
	if oci {
		base = mutate.ConfigMediaType(mutate.MediaType(base, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant, cf.OSVersion = platform.OS, platform.Architecture, platform.Variant, platform.OSVersion
	cf.Config = cfg
	cf.Config.Env = append([]string{PathEnv}, cfg.Env...)
	return mutate.ConfigFile(img, cf)
}

// newIndex returns a Docker manifest list of imgs, each described with the
// platform of its configuration.
func newIndex(imgs ...v1.Image) (v1.ImageIndex, error) {
	var adds []mutate.IndexAddendum
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: cf.Platform()}})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.DockerManifestList), adds...), nil
}

// gzipLayer returns a gzip-compressed Docker layer of entries.
func gzipLayer(entries ...entry) (*layer, error) {
	return tarLayer(compression.GZip, types.DockerLayer, entries...)
}

// markerLayer returns a layer with the single file /name containing content.
func markerLayer(name, content string) (*layer, error) {
	return gzipLayer(fileEntry(name, 0o644, []byte(content)))
}

// busyboxPlus returns a linux/amd64 image of the busybox layer, the layers
// made by the given functions, and configuration cfg.
func busyboxPlus(cfg v1.Config, more ...func() (*layer, error)) (v1.Image, error) {
	bb, err := busyboxLayer()
	if err != nil {
		return nil, err
	}
	layers := []v1.Layer{bb}
	for _, f := range more {
		l, err := f()
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	return newImage(linuxAMD64, false, cfg, layers...)
}

// Busybox returns the busybox image: the busybox layer, Cmd ["sh"].
func Busybox() (v1.Image, error) { return busyboxPlus(shCmd) }

// User1002 returns the busybox image configured with User "1002".
func User1002() (v1.Image, error) {
	return busyboxPlus(v1.Config{Cmd: []string{"sh"}, User: "1002"})
}

// Whiteout returns a three-layer image: busybox; a layer adding /data/keep,
// /data/gone, /opaque/old1 and /opaque/sub/old2; and a layer deleting
// /data/gone (whiteout data/.wh.gone), making /opaque opaque
// (opaque/.wh..wh..opq) and adding /opaque/new. Extracted, it must have
// /data/keep and /opaque/new only.
func Whiteout() (v1.Image, error) {
	return busyboxPlus(shCmd,
		func() (*layer, error) {
			return gzipLayer(
				dirEntry("data", 0o755),
				fileEntry("data/keep", 0o644, []byte("keep\n")),
				fileEntry("data/gone", 0o644, []byte("gone\n")),
				dirEntry("opaque", 0o755),
				fileEntry("opaque/old1", 0o644, []byte("old1\n")),
				dirEntry("opaque/sub", 0o755),
				fileEntry("opaque/sub/old2", 0o644, []byte("old2\n")),
			)
		},
		func() (*layer, error) {
			return gzipLayer(
				dirEntry("data", 0o755),
				fileEntry("data/.wh.gone", 0o644, nil),
				dirEntry("opaque", 0o755),
				fileEntry("opaque/.wh..wh..opq", 0o644, nil),
				fileEntry("opaque/new", 0o644, []byte("new\n")),
			)
		})
}

// MultiArch returns an index (Docker manifest list) of a linux/amd64 image (busybox and /arch
// containing "amd64") and a linux/arm64/v8 image (only /arch containing
// "arm64").
func MultiArch() (v1.ImageIndex, error) {
	amd64, err := busyboxPlus(shCmd, func() (*layer, error) { return markerLayer("arch", "amd64") })
	if err != nil {
		return nil, err
	}
	marker, err := markerLayer("arch", "arm64")
	if err != nil {
		return nil, err
	}
	arm64, err := newImage(linuxARM64, false, v1.Config{Cmd: []string{"/bin/sh"}}, marker)
	if err != nil {
		return nil, err
	}
	return newIndex(amd64, arm64)
}

// WindowsImage returns a plain (non-index) image whose configuration says
// windows/amd64, with one tiny layer.
func WindowsImage() (v1.Image, error) {
	l, err := gzipLayer(dirEntry("Files", 0o755), fileEntry("Files/windows-marker", 0o644, []byte("windows\n")))
	if err != nil {
		return nil, err
	}
	return newImage(windowsAMD64, false, v1.Config{Cmd: []string{"cmd.exe"}}, l)
}

// WindowsOnly returns an index (Docker manifest list) whose only manifest is WindowsImage.
func WindowsOnly() (v1.ImageIndex, error) {
	img, err := WindowsImage()
	if err != nil {
		return nil, err
	}
	return newIndex(img)
}

// OCIZstd returns an image with OCI media types: the busybox layer (gzip) and
// a zstd-compressed layer (application/vnd.oci.image.layer.v1.tar+zstd)
// holding /zstd-marker.
func OCIZstd() (v1.Image, error) {
	bb, err := busyboxLayer()
	if err != nil {
		return nil, err
	}
	zl, err := tarLayer(compression.ZStd, types.OCILayerZStd, fileEntry("zstd-marker", 0o644, []byte("zstd\n")))
	if err != nil {
		return nil, err
	}
	return newImage(linuxAMD64, true, shCmd, bb.withMediaType(types.OCILayer), zl)
}

// Uncompressed returns an OCI image of one plain tar layer
// (application/vnd.oci.image.layer.v1.tar) holding /plain-marker.
func Uncompressed() (v1.Image, error) {
	l, err := tarLayer(compression.None, types.OCIUncompressedLayer, fileEntry("plain-marker", 0o644, []byte("plain\n")))
	if err != nil {
		return nil, err
	}
	return newImage(linuxAMD64, true, shCmd, l)
}

// EscapePaths lists the host paths the Malicious images try to create or
// alter. Tests must check that none of them exists after pulling (and
// running) the images, and also that /etc/hostname is unchanged: the
// "hardlink" attacks try to overwrite it through a hard link.
var EscapePaths = []string{
	"/tmp/pier-escape-dotdot",
	"/tmp/pier-escape-absolute",
	"/tmp/pier-escape-symlink",
	"/tmp/pier-escape-symlink-rel",
}

// Malicious returns one single-layer image per layer attack:
//   - "dotdot": entry ../../../../../../tmp/pier-escape-dotdot;
//   - "absolute": entry /tmp/pier-escape-absolute;
//   - "symlink-dir": symlink evil -> /tmp, then file evil/pier-escape-symlink;
//   - "symlink-relative": symlink up -> ../../../../../../tmp, then file
//     up/pier-escape-symlink-rel;
//   - "hardlink": hard link pwn -> /etc/hostname, then a write of "pwned" to pwn;
//   - "hardlink-relative": the same with target ../../../../etc/hostname;
//   - "device": character device dev/null (1:3) and block device dev/sda (8:0);
//   - "setuid": bin/suid with mode 04755 and bin/sgid with mode 02755.
func Malicious() (map[string]v1.Image, error) {
	escape := []byte("pier-escape\n")
	script := []byte("#!/bin/sh\nid\n")
	attacks := map[string][]entry{
		"dotdot":   {fileEntry("../../../../../../tmp/pier-escape-dotdot", 0o644, escape)},
		"absolute": {fileEntry("/tmp/pier-escape-absolute", 0o644, escape)},
		"symlink-dir": {
			linkEntry(tar.TypeSymlink, "evil", "/tmp"),
			fileEntry("evil/pier-escape-symlink", 0o644, escape),
		},
		"symlink-relative": {
			linkEntry(tar.TypeSymlink, "up", "../../../../../../tmp"),
			fileEntry("up/pier-escape-symlink-rel", 0o644, escape),
		},
		"hardlink": {
			linkEntry(tar.TypeLink, "pwn", "/etc/hostname"),
			fileEntry("pwn", 0o644, []byte("pwned")),
		},
		"hardlink-relative": {
			linkEntry(tar.TypeLink, "pwn", "../../../../etc/hostname"),
			fileEntry("pwn", 0o644, []byte("pwned")),
		},
		"device": {
			dirEntry("dev", 0o755),
			deviceEntry(tar.TypeChar, "dev/null", 0o666, 1, 3),
			deviceEntry(tar.TypeBlock, "dev/sda", 0o660, 8, 0),
		},
		"setuid": {
			dirEntry("bin", 0o755),
			fileEntry("bin/suid", 0o4755, script),
			fileEntry("bin/sgid", 0o2755, script),
		},
	}
	imgs := map[string]v1.Image{}
	for name, entries := range attacks {
		l, err := gzipLayer(entries...)
		if err != nil {
			return nil, err
		}
		if imgs[name], err = newImage(linuxAMD64, false, v1.Config{}, l); err != nil {
			return nil, err
		}
	}
	return imgs, nil
}
