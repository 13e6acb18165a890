package testenv

import (
	"archive/tar"
	"bytes"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxCacheDir is where Debian's busybox package is unpacked (reused when
// present). Without write access to it, a pier-e2e/busybox directory in the
// user's cache directory is used instead.
const BusyboxCacheDir = "/var/cache/pier-e2e/busybox"

// staticBusybox is the fallback binary, from Debian's busybox-static.
const staticBusybox = "/bin/busybox"

// hostLibs are the glibc files the dynamic busybox needs, copied from the host.
var hostLibs = []string{
	"/lib/x86_64-linux-gnu/libc.so.6",
	"/lib/x86_64-linux-gnu/libresolv.so.2",
	"/lib64/ld-linux-x86-64.so.2",
}

// scripts replace applets Debian's busybox lacks but critest uses.
var scripts = map[string]string{
	"pgrep": `#!/bin/sh
# harness pgrep: print PIDs whose process name (comm) matches the pattern $1
rc=1
for d in /proc/[0-9]*; do
	read -r c <"$d/comm" 2>/dev/null || continue
	case "$c" in $1) echo "${d#/proc/}"; rc=0 ;; esac
done
exit $rc
`,
	"ipcs": `#!/bin/sh
# harness ipcs: list SysV shared memory segments of this IPC namespace (ipcs -m)
echo
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes      nattch     status"
tail -n +2 /proc/sysvipc/shm 2>/dev/null | while read -r key shmid perms size cpid lpid nattch uid rest; do
	echo "$key $shmid $uid $perms $size $nattch"
done
echo
`,
}

const etcPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
`

const etcGroup = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
users:x:100:
staff:x:50:
nogroup:x:65534:
`

// BusyboxLayer returns the base layer of the test images (gzip, Docker media
// type): a replica of the busybox image with Debian's dynamic busybox, its
// glibc libraries from the host, applets hard-linked to /bin/busybox, the
// pgrep and ipcs scripts and root-only /etc/passwd, group and shadow. If the
// busybox package cannot be downloaded, /bin/busybox (busybox-static) is used
// with a warning on stderr. The layer is built once per process.
func BusyboxLayer() (v1.Layer, error) { return busyboxLayer() }

var busyboxLayer = sync.OnceValues(func() (*layer, error) {
	data, err := busyboxTar()
	if err != nil {
		return nil, err
	}
	return newLayer(data, compression.GZip, types.DockerLayer)
})

// busyboxTree is the base of a busybox root: dirs (tmp sticky, root
// private), /bin/busybox holding binary, and each applet hard-linked to it
// in /bin.
func busyboxTree(binary []byte, applets, dirs []string) []entry {
	var entries []entry
	for _, d := range dirs {
		mode := int64(0o755)
		switch d {
		case "tmp":
			mode = 0o1777
		case "root":
			mode = 0o700
		}
		entries = append(entries, dirEntry(d, mode))
	}
	entries = append(entries, fileEntry("bin/busybox", 0o755, binary))
	for _, a := range applets {
		if a != "busybox" {
			entries = append(entries, linkEntry(tar.TypeLink, "bin/"+a, "bin/busybox"))
		}
	}
	return entries
}

// busyboxTar builds the uncompressed busybox layer.
func busyboxTar() ([]byte, error) {
	bin, dynamic := busyboxBinary()
	binary, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", bin, err)
	}
	applets := strings.Fields(string(out))
	slices.Sort(applets)

	applets = slices.DeleteFunc(applets, func(a string) bool { _, isScript := scripts[a]; return isScript })
	entries := busyboxTree(binary, applets, []string{"bin", "etc", "home", "root", "tmp", "usr", "usr/bin", "usr/sbin", "var", "var/run", "var/spool", "var/spool/mail", "var/www"})
	for _, name := range slices.Sorted(maps.Keys(scripts)) {
		entries = append(entries, fileEntry("bin/"+name, 0o755, []byte(scripts[name])))
	}
	entries = append(entries,
		fileEntry("etc/passwd", 0o644, []byte(etcPasswd)),
		fileEntry("etc/group", 0o644, []byte(etcGroup)),
		fileEntry("etc/shadow", 0o640, []byte(shadow(etcPasswd))),
	)
	if dynamic {
		entries = append(entries, dirEntry("lib", 0o755), dirEntry("lib/x86_64-linux-gnu", 0o755), dirEntry("lib64", 0o755))
		for _, lib := range hostLibs {
			data, err := os.ReadFile(lib)
			if err != nil {
				return nil, fmt.Errorf("glibc for busybox: %w", err)
			}
			fi, err := os.Stat(lib)
			if err != nil {
				return nil, err
			}
			entries = append(entries, fileEntry(strings.TrimPrefix(lib, "/"), int64(fi.Mode().Perm()), data))
		}
	}
	var buf bytes.Buffer
	if err := writeTar(&buf, entries); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// shadow returns an /etc/shadow with a locked password for each user of passwd.
func shadow(passwd string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(passwd), "\n") {
		user, _, _ := strings.Cut(line, ":")
		b.WriteString(user + ":*:10933:0:99999:7:::\n")
	}
	return b.String()
}

// busyboxBinary returns the busybox binary to ship and whether it is
// Debian's dynamic one (which needs the host's glibc).
var busyboxBinary = sync.OnceValues(func() (path string, dynamic bool) {
	dir := BusyboxCacheDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		userCache, _ := os.UserCacheDir()
		dir = filepath.Join(userCache, "pier-e2e", "busybox")
	}
	bin := filepath.Join(dir, "root", "bin", "busybox")
	if _, err := os.Stat(bin); err == nil {
		return bin, true
	}
	if err := fetchBusybox(dir); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: WARNING: %v; using busybox-static %s, "+
			"whose sh runs applets internally (critest's MaskedPaths spec will fail)\n", err, staticBusybox)
		return staticBusybox, false
	}
	return bin, true
})

// fetchBusybox downloads Debian's busybox package (without installing it) and
// unpacks it as dir/root.
func fetchBusybox(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(dir, "fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := run(tmp, "apt-get", "download", "busybox"); err != nil {
		return err
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "busybox_*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download busybox: got %d .deb files", len(debs))
	}
	if err := run(tmp, "dpkg-deb", "-x", debs[0], "root"); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(tmp, "root"), filepath.Join(dir, "root")); err != nil {
		// Another process may have unpacked it first.
		if _, statErr := os.Stat(filepath.Join(dir, "root", "bin", "busybox")); statErr != nil {
			return err
		}
	}
	return nil
}

// run runs a command in dir, returning its output in the error.
func run(dir, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
