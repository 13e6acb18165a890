// Package mountinfo finds and removes the mounts below a directory, from
// /proc/self/mountinfo.
package mountinfo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Under lists the mount points at dir or below it in the caller's mount
// namespace, in mount order.
func Under(dir string) ([]string, error) {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mount-point options ...: the fifth
		// field, found without splitting the line (a node has hundreds
		// of mounts, and a container's removal reads them twice).
		p, ok := field(sc.Bytes(), 4)
		if !ok {
			continue
		}
		if pt := Unescape(string(p)); pt == dir || strings.HasPrefix(pt, dir+"/") {
			points = append(points, pt)
		}
	}
	return points, sc.Err()
}

// field returns the n-th (from 0) space-separated field of line.
func field(line []byte, n int) ([]byte, bool) {
	for ; n > 0; n-- {
		i := bytes.IndexByte(line, ' ')
		if i < 0 {
			return nil, false
		}
		line = line[i+1:]
	}
	if i := bytes.IndexByte(line, ' '); i >= 0 {
		line = line[:i]
	}
	return line, len(line) > 0
}

// UnmountUnder unmounts everything mounted at dir or below it, deepest
// first, detaching what is busy. It fails when a mount is left, so that a
// caller never removes files through one.
func UnmountUnder(dir string) error {
	points, err := Under(dir)
	if err != nil || len(points) == 0 {
		return err
	}
	// Deeper paths, and later mounts on the same path, first.
	slices.Reverse(points)
	slices.SortStableFunc(points, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, p := range points {
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
	if left, err := Under(dir); err != nil || len(left) > 0 {
		return errors.Join(err, fmt.Errorf("mounts left under %s: %v", dir, left))
	}
	return nil
}

// Unescape undoes mountinfo's octal escapes (\040 for a space).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
