package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pier-runtime/pier/e2e/testenv"
	"github.com/pier-runtime/pier/internal/mountinfo"
)

// nodePaths are the node's directories a runtime writes by default; the
// configurations here move each elsewhere, and the cleanup removes any
// that a runtime still made.
var nodePaths = []string{
	"/run/containerd", "/var/lib/containerd", "/opt/containerd",
	"/run/crio", "/var/lib/crio", "/var/log/crio", "/run/containers", "/var/lib/containers",
	"/run/nri", "/etc/crio",
}

// before is what was on the node before a runtime started.
type before struct {
	cgroups map[string]bool // the runtime's top-level cgroup names, per hierarchy
	paths   map[string]bool
	netns   map[string]bool
}

func snapshot(def *runtimeDef) before {
	b := before{cgroups: map[string]bool{}, paths: map[string]bool{}, netns: map[string]bool{}}
	for _, p := range cgroupsOf(def) {
		b.cgroups[p] = true
	}
	for _, p := range nodePaths {
		if _, err := os.Lstat(p); err == nil {
			b.paths[p] = true
		}
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		b.netns[e.Name()] = true
	}
	return b
}

// cgroupsOf lists the runtime's top-level cgroups, in every hierarchy.
func cgroupsOf(def *runtimeDef) []string {
	var out []string
	mounts, _ := testenv.CgroupMounts()
	for _, m := range mounts {
		for _, c := range def.cgroups {
			found, _ := filepath.Glob(filepath.Join(m, c))
			for _, p := range found {
				if fi, err := os.Stat(p); err == nil && fi.IsDir() {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// cleanup stops the runtime and removes what it left.
func (in *instance) cleanup(b before) error {
	var errs []error
	if in.pierd != nil {
		if err := in.pierd.RemovePods(); err != nil {
			errs = append(errs, fmt.Errorf("remove pier's pods: %w", err))
		}
		in.pierd.Stop()
	} else {
		in.stopDaemon()
	}
	// Its helpers (shims, conmon) name its directory on their command line.
	if n := killMatching(in.dir); n > 0 {
		fmt.Printf("=== %s: killed %d processes left under %s\n", in.def.title, n, in.dir)
	}
	// Its pods' cgroups, and what still runs in them.
	made := map[string]bool{}
	for _, p := range cgroupsOf(in.def) {
		if !b.cgroups[p] {
			killCgroup(p)
			made[filepath.Base(p)] = true
		}
	}
	for c := range made {
		if err := testenv.RemoveCgroupTree("/" + c); err != nil {
			errs = append(errs, err)
		}
	}
	if len(made) > 0 {
		fmt.Printf("=== %s: removed %d top-level cgroups it made\n", in.def.title, len(made))
	}
	if err := mountinfo.UnmountUnder(in.dir); err != nil {
		errs = append(errs, err)
	}
	if in.pierd == nil {
		entries, _ := os.ReadDir("/run/netns")
		for _, e := range entries {
			if !b.netns[e.Name()] && strings.HasPrefix(e.Name(), "cni-") {
				p := filepath.Join("/run/netns", e.Name())
				syscall.Unmount(p, syscall.MNT_DETACH)
				os.Remove(p)
				fmt.Printf("=== %s: removed network namespace %s\n", in.def.title, p)
			}
		}
	}
	if in.net != nil {
		if err := in.net.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range nodePaths {
		if _, err := os.Lstat(p); err == nil && !b.paths[p] {
			if err := mountinfo.UnmountUnder(p); err != nil {
				errs = append(errs, err)
			}
			os.RemoveAll(p)
			fmt.Printf("=== %s: removed %s, which it made\n", in.def.title, p)
		}
	}
	if err := os.RemoveAll(in.dir); err != nil {
		errs = append(errs, err)
	}
	if out, _ := exec.Command("iptables-save", "-t", "nat").Output(); strings.Contains(string(out), "pier-"+in.def.bridge) {
		errs = append(errs, fmt.Errorf("iptables rules of network pier-%s are left", in.def.bridge))
	}
	return errors.Join(errs...)
}

// killMatching kills the processes whose command line contains s (not
// this one) and waits for them; it returns how many there were.
func killMatching(s string) int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	waitGone(pids)
	return len(pids)
}

// killCgroup kills every process in the cgroup tree at dir.
func killCgroup(dir string) {
	var pids []int
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "cgroup.procs" {
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
		}
		return nil
	})
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	waitGone(pids)
}

func waitGone(pids []int) {
	for i := 0; i < 50; i++ {
		if !slices.ContainsFunc(pids, alive) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
