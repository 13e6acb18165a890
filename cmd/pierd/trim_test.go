package main

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestReadOnlyMappings(t *testing.T) {
	smaps := `00400000-00d58000 r-xp 00000000 fe:00 9994831                            /usr/bin/pierd
Size:               9568 kB
Rss:                9184 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
00d58000-01827000 r--p 00958000 fe:00 9994831                            /usr/bin/pierd
Size:              11068 kB
Anonymous:             4 kB
VmFlags: rd mr mw me
01827000-018b0000 rw-p 01427000 fe:00 9994831                            /usr/bin/pierd
Anonymous:           300 kB
018b0000-038fc000 rw-p 00000000 00:00 0
Anonymous:           124 kB
7f9d88449000-7f9d8859f000 r-xp 00026000 fe:00 326269                     /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f9d88600000-7f9d88610000 r--p 00000000 fe:00 9994832                    /usr/bin/pierd (deleted)
Anonymous:             0 kB
`
	path := filepath.Join(t.TempDir(), "smaps")
	if err := os.WriteFile(path, []byte(smaps), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readOnlyMappings(path, "/usr/bin/pierd")
	if err != nil {
		t.Fatal(err)
	}
	// Only the code: the read-only data has a private copy, the data is
	// writable, libc and the anonymous mapping are not pierd's file.
	if want := []mapping{{0x400000, 0xd58000}}; !slices.Equal(got, want) {
		t.Fatalf("readOnlyMappings = %x, want %x", got, want)
	}
}

// TestDropExecutablePages drops the test binary's own pages and goes on
// running code and reading read-only data that was mapped before.
func TestDropExecutablePages(t *testing.T) {
	before := rssOfExe(t)
	n, err := dropExecutablePages("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no mapping of the executable was dropped")
	}
	after := rssOfExe(t)
	t.Logf("dropped %d bytes of mappings; the executable's resident pages: %d kB before, %d kB after", n, before, after)
	if after >= before {
		t.Fatalf("the executable's resident pages did not shrink: %d kB before, %d kB after", before, after)
	}
	// Code and constant data still work: they fault back in.
	if s := strings.Repeat(defaultConfig[:1], 3); len(s) != 3 {
		t.Fatal(s)
	}
}

// rssOfExe sums the resident kB of this process's mappings of its executable.
func rssOfExe(t *testing.T) int {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	var sum, n int
	mine := false
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 5 && strings.Contains(f[0], "-") {
			mine = len(f) == 6 && f[5] == exe
			continue
		}
		if mine && len(f) >= 2 && f[0] == "Rss:" {
			if v, err := strconv.Atoi(f[1]); err == nil {
				n = v
				sum += n
			}
		}
	}
	return sum
}
