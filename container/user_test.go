package container

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

const (
	testPasswd = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1::/usr/sbin:/usr/sbin/nologin
# a comment, and a malformed line:
broken:x:notanumber:1::/:/bin/sh
user-defined-in-image:x:1000:1000::/home/user:/bin/sh
nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin
`
	testGroup = `root:x:0:
daemon:x:1:
wheel:x:10:root,user-defined-in-image
user-defined-in-image:x:1000:
group-defined-in-image:x:50000:user-defined-in-image
nogroup:x:65534:
`
)

func i64(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }

func TestUser(t *testing.T) {
	acc := parseAccounts([]byte(testPasswd), []byte(testGroup))
	for _, tc := range []struct {
		name      string
		sc        *runtimeapi.LinuxContainerSecurityContext
		imageUser string
		want      specs.User
		wantErr   string
	}{
		{name: "default root", want: specs.User{UID: 0, GID: 0, AdditionalGids: []uint32{0, 10}}},
		{name: "run_as_user", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000)},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 1000, 50000}}},
		{name: "run_as_user, group and supplemental groups, merge",
			sc:   &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000), RunAsGroup: i64(3000), SupplementalGroups: []int64{4000, 3000}},
			want: specs.User{UID: 1000, GID: 3000, AdditionalGids: []uint32{10, 3000, 4000, 50000}}},
		{name: "strict policy ignores the image's groups",
			sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000), RunAsGroup: i64(3000), SupplementalGroups: []int64{4000},
				SupplementalGroupsPolicy: runtimeapi.SupplementalGroupsPolicy_Strict},
			want: specs.User{UID: 1000, GID: 3000, AdditionalGids: []uint32{3000, 4000}}},
		{name: "run_as_username", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "user-defined-in-image"},
			want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 1000, 50000}}},
		{name: "unknown run_as_username", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "nosuch"}, wantErr: "no such user"},
		{name: "run_as_user overrides the image user and its group", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000)},
			imageUser: "daemon:daemon", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 1000, 50000}}},
		{name: "run_as_group alone keeps the image user", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsGroup: i64(3000)},
			imageUser: "daemon", want: specs.User{UID: 1, GID: 3000, AdditionalGids: []uint32{3000}}},
		{name: "image uid", imageUser: "1000", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 1000, 50000}}},
		{name: "image name", imageUser: "user-defined-in-image", want: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 1000, 50000}}},
		{name: "image uid:gid", imageUser: "1000:50000", want: specs.User{UID: 1000, GID: 50000, AdditionalGids: []uint32{10, 50000}}},
		{name: "image name:group", imageUser: "user-defined-in-image:group-defined-in-image",
			want: specs.User{UID: 1000, GID: 50000, AdditionalGids: []uint32{10, 50000}}},
		{name: "image uid without passwd entry", imageUser: "4242", want: specs.User{UID: 4242, GID: 0, AdditionalGids: []uint32{0}}},
		{name: "image user not in the image", imageUser: "nosuch", wantErr: `no user "nosuch"`},
		{name: "image group not in the image", imageUser: "1000:nosuch", wantErr: `no group "nosuch"`},
		{name: "malformed passwd line is skipped", imageUser: "broken", wantErr: `no user "broken"`},
		{name: "negative uid", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(-1)}, wantErr: "out of range"},
		{name: "negative supplemental group", sc: &runtimeapi.LinuxContainerSecurityContext{SupplementalGroups: []int64{-5}}, wantErr: "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &specs.Spec{}
			err := WithUser(tc.sc, tc.imageUser, acc)(s)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := s.Process.User
			if got.UID != tc.want.UID || got.GID != tc.want.GID || !slices.Equal(got.AdditionalGids, tc.want.AdditionalGids) {
				t.Errorf("user = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestUserNilAccounts(t *testing.T) {
	s := &specs.Spec{}
	if err := WithUser(nil, "123:456", nil)(s); err != nil {
		t.Fatal(err)
	}
	if u := s.Process.User; u.UID != 123 || u.GID != 456 {
		t.Errorf("user = %+v", u)
	}
	if err := WithUser(nil, "app", nil)(s); err == nil {
		t.Error("a user name resolved without any /etc/passwd")
	}
}

func writeRootfs(t *testing.T, passwd, group string) string {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"passwd": passwd, "group": group} {
		if data == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestUserReadAccounts(t *testing.T) {
	acc, err := ReadAccounts(writeRootfs(t, testPasswd, testGroup))
	if err != nil {
		t.Fatal(err)
	}
	if u, ok := acc.userByName("user-defined-in-image"); !ok || u.uid != 1000 || u.gid != 1000 {
		t.Errorf("user = %+v, %v", u, ok)
	}
	if got := acc.memberOf("user-defined-in-image"); !slices.Equal(got, []uint32{10, 50000}) {
		t.Errorf("groups = %v", got)
	}
}

func TestUserReadAccountsMissing(t *testing.T) {
	// A scratch image: no /etc at all.
	acc, err := ReadAccounts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(acc.users)+len(acc.groups) != 0 {
		t.Errorf("accounts = %+v", acc)
	}
}

// A symbolic link in the image is resolved inside the image, never on the
// host.
func TestUserReadAccountsSymlinkStaysInRootfs(t *testing.T) {
	host := t.TempDir()
	hostPasswd := filepath.Join(host, "passwd")
	if err := os.WriteFile(hostPasswd, []byte("evil:x:4242:4242::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := writeRootfs(t, "", testGroup)
	if err := os.Symlink(hostPasswd, filepath.Join(root, "etc", "passwd")); err != nil {
		t.Fatal(err)
	}
	acc, err := ReadAccounts(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := acc.userByName("evil"); ok {
		t.Fatal("read the host's file through a symbolic link in the image")
	}
	// The same absolute path inside the image is what the link means.
	inside := filepath.Join(root, hostPasswd)
	if err := os.MkdirAll(filepath.Dir(inside), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(inside, []byte("evil:x:777:777::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	acc, err = ReadAccounts(root)
	if err != nil {
		// Kernels without openat2 fall back to os.Root, which refuses
		// absolute links: an error, but never the host's file.
		t.Logf("ReadAccounts: %v", err)
		return
	}
	if u, ok := acc.userByName("evil"); !ok || u.uid != 777 {
		t.Errorf("evil = %+v, %v; want uid 777 from inside the root file system", u, ok)
	}
}

func TestUserReadAccountsNotRegular(t *testing.T) {
	root := writeRootfs(t, "", testGroup)
	// A FIFO must neither block nor be read.
	if err := unix.Mkfifo(filepath.Join(root, "etc", "passwd"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if _, err := ReadAccounts(root); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("error = %v", err)
	}
}
