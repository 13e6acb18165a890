package container

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Accounts are the users and groups of an image's /etc/passwd and
// /etc/group. The zero value has none.
type Accounts struct {
	users  []account
	groups []group
}

type account struct {
	name     string
	uid, gid uint32
}

type group struct {
	name    string
	gid     uint32
	members []string
}

// maxAccountsFile bounds what is read of an image's /etc/passwd or /etc/group.
const maxAccountsFile = 16 << 20

// ReadAccounts reads /etc/passwd and /etc/group of the root file system at
// rootfs. Symbolic links are resolved inside rootfs, as the container would
// see them, so an image cannot make pier read a file of the host. A missing
// file means no entries.
func ReadAccounts(rootfs string) (*Accounts, error) {
	passwd, err := readInRoot(rootfs, "etc/passwd")
	if err != nil {
		return nil, err
	}
	grp, err := readInRoot(rootfs, "etc/group")
	if err != nil {
		return nil, err
	}
	return parseAccounts(passwd, grp), nil
}

// readInRoot reads the regular file name under root, resolving every
// symbolic link as if root were "/" (openat2 RESOLVE_IN_ROOT). Where the
// kernel lacks openat2, os.Root is used instead: it refuses links that
// leave root. A missing file reads as nil.
func readInRoot(root, name string) ([]byte, error) {
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: root, Err: err}
	}
	defer unix.Close(dir)
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	var fd int
	for range 16 { // EAGAIN: a concurrent rename; retry
		fd, err = unix.Openat2(dir, name, &how)
		if err != unix.EAGAIN && err != unix.EINTR {
			break
		}
	}
	var f *os.File
	switch {
	case err == nil:
		f = os.NewFile(uintptr(fd), root+"/"+name)
	case err == unix.ENOSYS:
		r, rerr := os.OpenRoot(root)
		if rerr != nil {
			return nil, rerr
		}
		defer r.Close()
		if f, err = r.Open(name); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, nil
			}
			return nil, fmt.Errorf("read the image's /%s: %w", name, err)
		}
	case err == unix.ENOENT || err == unix.ENOTDIR:
		return nil, nil
	default:
		return nil, fmt.Errorf("read the image's /%s: %w", name, &os.PathError{Op: "openat2", Path: root + "/" + name, Err: err})
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("the image's /%s is not a regular file", name)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxAccountsFile+1))
	if err != nil {
		return nil, fmt.Errorf("read the image's /%s: %w", name, err)
	}
	if len(b) > maxAccountsFile {
		return nil, fmt.Errorf("the image's /%s is larger than %d bytes", name, maxAccountsFile)
	}
	return b, nil
}

// parseAccounts parses passwd and group files; malformed lines are skipped,
// as the C library does.
func parseAccounts(passwd, grp []byte) *Accounts {
	a := &Accounts{}
	eachEntry(passwd, func(f []string) {
		// name:password:uid:gid:gecos:home:shell
		if len(f) < 4 {
			return
		}
		uid, err1 := parseID(f[2])
		gid, err2 := parseID(f[3])
		if f[0] != "" && err1 == nil && err2 == nil {
			a.users = append(a.users, account{name: f[0], uid: uid, gid: gid})
		}
	})
	eachEntry(grp, func(f []string) {
		// name:password:gid:member,member
		if len(f) < 3 {
			return
		}
		gid, err := parseID(f[2])
		if f[0] == "" || err != nil {
			return
		}
		g := group{name: f[0], gid: gid}
		if len(f) > 3 {
			for m := range strings.SplitSeq(f[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					g.members = append(g.members, m)
				}
			}
		}
		a.groups = append(a.groups, g)
	})
	return a
}

func eachEntry(data []byte, fn func(fields []string)) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, maxAccountsFile)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '+' || line[0] == '-' {
			continue
		}
		fn(strings.Split(line, ":"))
	}
}

// parseID parses a decimal uid or gid. runc wants them below 2^31.
func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > math.MaxInt32 {
		return 0, fmt.Errorf("%q is not a valid id", s)
	}
	return uint32(n), nil
}

func checkID(what string, n int64) (uint32, error) {
	if n < 0 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%s %d is out of range", what, n)
	}
	return uint32(n), nil
}

func (a *Accounts) userByName(name string) (account, bool) {
	i := slices.IndexFunc(a.users, func(u account) bool { return u.name == name })
	if i < 0 {
		return account{}, false
	}
	return a.users[i], true
}

func (a *Accounts) userByID(uid uint32) (account, bool) {
	i := slices.IndexFunc(a.users, func(u account) bool { return u.uid == uid })
	if i < 0 {
		return account{}, false
	}
	return a.users[i], true
}

func (a *Accounts) groupByName(name string) (group, bool) {
	i := slices.IndexFunc(a.groups, func(g group) bool { return g.name == name })
	if i < 0 {
		return group{}, false
	}
	return a.groups[i], true
}

// memberOf returns the gids of the groups that list username.
func (a *Accounts) memberOf(username string) []uint32 {
	var gids []uint32
	for _, g := range a.groups {
		if slices.Contains(g.members, username) {
			gids = append(gids, g.gid)
		}
	}
	return gids
}

// WithUser sets the user the container runs as. The uid comes from the
// security context's run_as_user or run_as_username, else from the image's
// User ("uid", "name", "uid:gid", "name:group"); the gid from run_as_group,
// else the image's group (when the image's user is used), else the user's
// primary group in the image's /etc/passwd, else 0. Names must exist in the
// image. The additional gids are the primary gid, the image's groups that
// list the user (supplemental groups policy Merge, the default; not with
// Strict) and the security context's supplemental groups.
func WithUser(sc *runtimeapi.LinuxContainerSecurityContext, imageUser string, acc *Accounts) SpecOpt {
	return func(s *specs.Spec) error {
		if acc == nil {
			acc = &Accounts{}
		}
		var (
			uid, gid uint32
			name     string // the user's name, when known
			gidSet   bool
			err      error
		)
		switch {
		case sc.GetRunAsUser() != nil:
			if uid, err = checkID("run_as_user", sc.GetRunAsUser().GetValue()); err != nil {
				return err
			}
		case sc.GetRunAsUsername() != "":
			u, ok := acc.userByName(sc.GetRunAsUsername())
			if !ok {
				return fmt.Errorf("run_as_username %q: no such user in the image's /etc/passwd", sc.GetRunAsUsername())
			}
			uid, name = u.uid, u.name
		case imageUser != "":
			user, grp, hasGroup := strings.Cut(imageUser, ":")
			if user != "" {
				if uid, err = parseID(user); err != nil {
					u, ok := acc.userByName(user)
					if !ok {
						return fmt.Errorf("image user %q: no user %q in the image's /etc/passwd", imageUser, user)
					}
					uid, name = u.uid, u.name
				}
			}
			if hasGroup && grp != "" {
				if gid, err = parseID(grp); err != nil {
					g, ok := acc.groupByName(grp)
					if !ok {
						return fmt.Errorf("image user %q: no group %q in the image's /etc/group", imageUser, grp)
					}
					gid = g.gid
				}
				gidSet = true
			}
		}
		if sc.GetRunAsGroup() != nil {
			if gid, err = checkID("run_as_group", sc.GetRunAsGroup().GetValue()); err != nil {
				return err
			}
			gidSet = true
		}
		entry, found := acc.userByID(uid)
		if name != "" {
			entry, found = acc.userByName(name)
		}
		if found {
			name = entry.name
			if !gidSet {
				gid = entry.gid
			}
		}
		gids := []uint32{gid}
		switch p := sc.GetSupplementalGroupsPolicy(); p {
		case runtimeapi.SupplementalGroupsPolicy_Merge, runtimeapi.SupplementalGroupsPolicy_Strict:
		default:
			return fmt.Errorf("supplemental groups policy %v is not supported", p)
		}
		if sc.GetSupplementalGroupsPolicy() == runtimeapi.SupplementalGroupsPolicy_Merge && name != "" {
			gids = append(gids, acc.memberOf(name)...)
		}
		for _, g := range sc.GetSupplementalGroups() {
			n, err := checkID("supplemental group", g)
			if err != nil {
				return err
			}
			gids = append(gids, n)
		}
		slices.Sort(gids)
		process(s).User = specs.User{UID: uid, GID: gid, AdditionalGids: slices.Compact(gids)}
		return nil
	}
}
