package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pier-runtime/pier/shim/protocol"
)

// A cgroup a process is in: a line of /proc/<pid>/cgroup.
type procCgroup struct {
	controllers []string // of a v1 hierarchy (with "name=..." for a named one); none for v2
	path        string   // from the hierarchy's root
	dir         string   // its directory in this mount namespace, "" when not mounted
}

// cgroupsOf returns the cgroups process pid is in, each with its directory
// where this process sees the hierarchy mounted. It reads /proc, so any
// cgroup driver (cgroupfs or systemd) and layout (v1, hybrid, v2) works.
func cgroupsOf(pid int) ([]procCgroup, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		return nil, err
	}
	var cgs []procCgroup
	for _, line := range strings.Split(string(b), "\n") {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		cg := procCgroup{path: parts[2]}
		if parts[1] != "" {
			cg.controllers = strings.Split(parts[1], ",")
		} else if parts[0] != "0" {
			continue
		}
		cgs = append(cgs, cg)
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		// id parent major:minor root mount-point options ... - fstype source super-options
		pre, post, ok := strings.Cut(line, " - ")
		fields, after := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 5 || len(after) < 3 || after[0] != "cgroup" && after[0] != "cgroup2" {
			continue
		}
		root, point := fields[3], fields[4]
		for i := range cgs {
			cg := &cgs[i]
			if cg.dir != "" || (after[0] == "cgroup2") != (len(cg.controllers) == 0) {
				continue
			}
			match := true
			for _, c := range cg.controllers {
				match = match && hasOption(after[2], c)
			}
			if rel, ok := within(cg.path, root); match && ok {
				cg.dir = filepath.Join(point, rel)
			}
		}
	}
	return cgs, nil
}

// joinContainerCgroups moves the exec helper into the cgroups of the
// container's init, as containerd and CRI-O account their exec helpers:
// the helper, the runtime's exec it runs and what they allocate are the
// container's, not the monitor's (which runs in pierd's cgroup). The
// init's cgroup holds a process, so on cgroup v2 it is one a process may
// join (a leaf, or the root of a container that made cgroups of its own).
// The helper ends with its exec, so it keeps no cgroup or systemd scope
// alive once the container's processes are gone; the runtime's kill --all
// kills it with them. A cgroup it cannot join is logged and left: the exec
// runs all the same.
func (s *server) joinContainerCgroups() {
	pid, err := s.initPid()
	if err != nil {
		logf("exec: the container's cgroup: %v", err)
		return
	}
	cgs, err := cgroupsOf(pid)
	if err != nil {
		logf("exec: the cgroups of the container's init %d: %v", pid, err)
		return
	}
	self := []byte(strconv.Itoa(os.Getpid()))
	// All at once: each write takes the kernel's cgroup threadgroup lock
	// for writing, and the first writer after a quiet spell waits for an
	// RCU grace period (5 to 15 ms here). Writers that arrive while one
	// holds it or waits share that grace period; one after another, with
	// a goroutine rescheduled in between, each of the v1 hierarchies
	// could pay its own.
	var wg sync.WaitGroup
	for _, cg := range cgs {
		if cg.dir == "" || cg.path == "/" {
			continue // not mounted here, or no cgroup of the container's
		}
		wg.Go(func() {
			if err := os.WriteFile(filepath.Join(cg.dir, "cgroup.procs"), self, 0); err != nil {
				logf("exec: join the container's cgroup %s: %v", cg.dir, err)
			}
		})
	}
	wg.Wait()
}

// initPid asks the monitor for the container's init pid.
func (s *server) initPid() (int, error) {
	conn, err := net.DialTimeout("unix", s.cfg.Socket, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if err := json.NewEncoder(conn).Encode(&protocol.Request{V: protocol.Version, Op: protocol.OpState}); err != nil {
		return 0, err
	}
	var resp protocol.Response
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return 0, err
	}
	if resp.Error != "" {
		return 0, errors.New(resp.Error)
	}
	if resp.State == nil || resp.State.Pid <= 0 {
		return 0, fmt.Errorf("the monitor's state has no pid")
	}
	return resp.State.Pid, nil
}
