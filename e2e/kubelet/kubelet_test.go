package kubelet

import (
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestKubelet runs one kubelet on one pierd with every static pod of
// pods_test.go at once, then checks each through what kubelet reports.
// The checks run in order; the pods run side by side (and beside
// TestImageGC's node).
func TestKubelet(t *testing.T) {
	parallel(t)
	start := time.Now()
	n := startNode(t, nodeOptions{pierConfig: cdiSpecDir(t), kubelet: map[string]any{
		// Small enough that the chatty pod's log is rotated several times;
		// enough files that kubelet never removes one (the log, about
		// 210 KB, fills at most 21 of 10 KiB, however slowly it comes).
		"containerLogMaxSize":         "10Ki",
		"containerLogMaxFiles":        30,
		"containerLogMonitorInterval": "3s",
		// CRI events (GetContainerEvents) and the Stream* list RPCs, the
		// whole suite long: checkEventsAndStreaming; pod and container
		// stats from the CRI: checkStats.
		"featureGates": map[string]bool{"EventedPLEG": true, "CRIListStreaming": true, "PodAndContainerStatsFromCRI": true},
	}})
	// Before the pods: kubelet allocates devices only of the plugins it has.
	plugin := startDevicePlugin(t, n, "null0")
	hostFile := filepath.Join(t.TempDir(), "hostfile.txt")
	if err := os.WriteFile(hostFile, []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*corev1.Pod{deletePod(), orderPod(), volumesPod(hostFile), probesPod(), livenessPod(),
		resourcesPod(), ephemeralPod(), oomPod(), restrictedPod(), neverPod(), onFailurePod(), killPod(), chattyPod(),
		imageVolumePod(), statsPod(), cdiPod()} {
		if err := n.kubelet.WritePod(p); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("kubelet and pierd up, manifests written in %s", time.Since(start).Round(time.Millisecond))

	var deleted *corev1.Pod // the pod DeleteStopsPod deleted
	var deletedAt time.Time
	t.Run("DeleteStopsPodInGracePeriod", func(t *testing.T) {
		deleted, deletedAt = checkDelete(t, n)
	})
	t.Run("InitContainerSidecarOrder", func(t *testing.T) { checkOrder(t, n) })
	t.Run("VolumesEnvArgsDNS", func(t *testing.T) { checkVolumes(t, n) })
	t.Run("Probes", func(t *testing.T) { checkProbes(t, n) })
	t.Run("FailingLivenessRestarts", func(t *testing.T) { checkLiveness(t, n) })
	t.Run("ResourcesInCgroup", func(t *testing.T) { checkResources(t, n) })
	t.Run("ImageVolume", func(t *testing.T) { checkImageVolume(t, n) })
	t.Run("CDIDevice", func(t *testing.T) { checkCDIDevice(t, n, plugin) })
	t.Run("EphemeralStorageLimit", func(t *testing.T) { checkEphemeral(t, n) })
	t.Run("OOMKilled", func(t *testing.T) { checkOOM(t, n) })
	t.Run("RestrictedPod", func(t *testing.T) { checkRestricted(t, n) })
	t.Run("RestartPolicyNever", func(t *testing.T) { checkNever(t, n) })
	t.Run("RestartPolicyOnFailure", func(t *testing.T) { checkOnFailure(t, n) })
	t.Run("KilledProcessRestarts", func(t *testing.T) { checkKilled(t, n) })
	t.Run("KilledShimRestarts", func(t *testing.T) { checkShimKilled(t, n) })
	t.Run("LogRotation", func(t *testing.T) { checkLogRotation(t, n) })
	t.Run("Stats", func(t *testing.T) { checkStats(t, n) })
	t.Run("GarbageCollection", func(t *testing.T) {
		if deleted == nil {
			t.Fatal("DeleteStopsPodInGracePeriod deleted no pod")
		}
		checkGC(t, n, deleted, deletedAt)
	})
	t.Run("EventedPLEGAndListStreaming", func(t *testing.T) { checkEventsAndStreaming(t, n) })
	t.Run("PierdRestart", func(t *testing.T) {
		for _, kill := range []bool{false, true} {
			name := "SIGTERM"
			if kill {
				name = "SIGKILL"
			}
			t.Run(name, func(t *testing.T) { checkPierdRestart(t, n, kill) })
		}
	})
}

// checkDelete deletes the delete pod's manifest once it runs, and checks
// through pier that kubelet stops its containers within the grace period:
// the one that exits on SIGTERM at once, the one that ignores it at the
// end of the grace period.
func checkDelete(t *testing.T, n *node) (*corev1.Pod, time.Time) {
	p := n.waitPod(t, "delete", 2*time.Minute, running())
	if err := n.kubelet.RemovePod("delete"); err != nil {
		t.Fatal(err)
	}
	deletedAt := time.Now()
	grace := deleteGrace * time.Second
	type seen struct {
		name     string
		stopped  time.Time // when the container was first seen exited or gone
		exitCode int32
		exited   bool // its exit was seen (not only its removal)
	}
	ctrs := map[string]*seen{}
	for _, c := range p.Status.ContainerStatuses {
		ctrs[containerID(&c)] = &seen{name: c.Name}
	}
	for {
		cs, _ := n.criPod(t, p.Name)
		now := time.Now()
		present := map[string]*runtimeapi.Container{}
		for _, c := range cs {
			present[c.Id] = c
		}
		left := 0
		for id, s := range ctrs {
			if !s.stopped.IsZero() {
				continue
			}
			c, ok := present[id]
			switch {
			case !ok:
				s.stopped = now
			case c.State == runtimeapi.ContainerState_CONTAINER_EXITED:
				s.stopped = now
				st, err := call(func(c context.Context) (*runtimeapi.ContainerStatusResponse, error) {
					return n.pierd.Runtime.ContainerStatus(c, &runtimeapi.ContainerStatusRequest{ContainerId: id})
				})
				if err == nil {
					s.exited, s.exitCode = true, st.Status.ExitCode
					if st.Status.FinishedAt > 0 {
						s.stopped = time.Unix(0, st.Status.FinishedAt)
					}
				}
			default:
				left++
			}
		}
		if left == 0 {
			break
		}
		if now.After(deletedAt.Add(grace + 20*time.Second)) {
			t.Fatalf("%d containers of the deleted pod still run %s after the manifest was deleted (grace period %s); pier reports %v",
				left, now.Sub(deletedAt).Round(time.Millisecond), grace, cs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The grace period runs from kubelet's stop request, which its log
	// dates; its noticing the deleted manifest comes before.
	kills := killTimes(t, n, p.Name)
	for _, s := range ctrs {
		kill, ok := kills[s.name]
		if !ok {
			t.Errorf("kubelet's log has no \"Killing container with a grace period\" for container %s", s.name)
			kill = deletedAt
		}
		took := s.stopped.Sub(kill)
		t.Logf("container %s stopped %s after kubelet began to stop it, %s after the manifest was deleted (exit seen %v, code %d)",
			s.name, took.Round(time.Millisecond), s.stopped.Sub(deletedAt).Round(time.Millisecond), s.exited, s.exitCode)
		if took > grace+2*time.Second {
			t.Errorf("container %s stopped %s after kubelet began to stop it, past its %s grace period", s.name, took.Round(time.Millisecond), grace)
		}
		switch s.name {
		case "stubborn":
			if took < grace-time.Second {
				t.Errorf("container stubborn, which ignores SIGTERM, stopped %s after kubelet began to stop it: before its %s grace period ended", took.Round(time.Millisecond), grace)
			}
			if s.exited && s.exitCode != 137 {
				t.Errorf("container stubborn exited with %d, want 137 (SIGKILL at the end of the grace period)", s.exitCode)
			}
		case "term":
			if s.exited && s.exitCode != 0 {
				t.Errorf("container term exited with %d, want 0 (its SIGTERM trap)", s.exitCode)
			}
		}
	}
	return p, deletedAt
}

// killTimes returns when kubelet's log says it began to stop each container
// of pod podName with the pod's grace period, by container name.
func killTimes(t *testing.T, n *node, podName string) map[string]time.Time {
	kills := map[string]time.Time{}
	for _, line := range strings.Split(n.kubelet.LogText(), "\n") {
		if !strings.Contains(line, `"Killing container with a grace period" pod="default/`+podName+`"`) {
			continue
		}
		_, name, _ := strings.Cut(line, ` containerName="`)
		name, _, _ = strings.Cut(name, `"`)
		if !strings.HasSuffix(line, fmt.Sprintf("gracePeriod=%d", deleteGrace)) {
			t.Errorf("kubelet stops container %s with another grace period than the pod's %d s: %s", name, deleteGrace, line)
		}
		// I1130 03:18:36.205725 (klog: local time, no year)
		f := strings.Fields(line)
		if len(f) < 2 || len(f[0]) != 5 {
			continue
		}
		at, err := time.ParseInLocation("0102 15:04:05.000000", f[0][1:]+" "+f[1], time.Local)
		if err != nil {
			t.Errorf("kubelet log line with a bad time: %v: %s", err, line)
			continue
		}
		kills[name] = at.AddDate(time.Now().Year(), 0, 0)
	}
	return kills
}

// checkOrder checks that the init container ran to completion before the
// sidecar started, and the sidecar before the app containers.
func checkOrder(t *testing.T, n *node) {
	p := n.waitPod(t, "order", 2*time.Minute, func(p *corev1.Pod) error {
		if err := running("sidecar", "app1", "app2")(p); err != nil {
			return err
		}
		if condition(p, corev1.PodReady) != corev1.ConditionTrue {
			return fmt.Errorf("pod is not Ready")
		}
		return nil
	})
	setup := status(p, "setup")
	if setup == nil || setup.State.Terminated == nil || setup.State.Terminated.ExitCode != 0 || setup.State.Terminated.Reason != "Completed" {
		t.Errorf("init container setup: want terminated, exit 0, Completed\n%s", describe(p))
	}
	if s := status(p, "sidecar"); s == nil || s.Started == nil || !*s.Started || s.RestartCount != 0 {
		t.Errorf("sidecar: want started, no restarts\n%s", describe(p))
	}
	// Running is when the runtime started a container's process, not when
	// its shell wrote its line (with evented PLEG kubelet knows of a start
	// at once): wait for all four lines.
	var order []string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		order = strings.Fields(readFile(t, filepath.Join(n.kubelet.EmptyDir(string(p.UID), "data"), "order")))
		if len(order) >= 4 || time.Now().After(deadline) {
			break
		}
	}
	if len(order) != 4 || order[0] != "setup" || order[1] != "sidecar" || !slices.Contains(order[2:], "app1") || !slices.Contains(order[2:], "app2") {
		t.Errorf("containers started in the order %v, want setup, sidecar, then app1 and app2", order)
	}
}

// checkVolumes checks what the volumes pod's reader container saw.
func checkVolumes(t *testing.T, n *node) {
	p := n.waitPod(t, "volumes", 2*time.Minute, running())
	out := n.readOutput(t, p, "out", time.Minute)
	read := func(name string) string { return readFile(t, filepath.Join(out, name)) }
	if got, want := read("args"), "zero\none two\nthree\n"; got != want {
		t.Errorf("command and args: the container got $0 and arguments %q, want %q", got, want)
	}
	if got := strings.TrimSpace(read("pwd")); got != "/work/dir" {
		t.Errorf("working directory %q, want /work/dir", got)
	}
	env := strings.Split(read("env"), "\n")
	for _, want := range []string{"GREETING=hello world", "POD_NAME=" + p.Name, "POD_IP=" + p.Status.PodIP, "MEM_LIMIT=50331648"} {
		if !slices.Contains(env, want) {
			t.Errorf("environment lacks %q:\n%s", want, strings.Join(env, "\n"))
		}
	}
	resolv := read("resolv.conf")
	for _, want := range []string{"nameserver 127.0.0.10", "search default.svc.cluster.local svc.cluster.local cluster.local e2e.test", "options ndots:5"} {
		if !strings.Contains(resolv, want) {
			t.Errorf("/etc/resolv.conf lacks %q (kubelet's ClusterFirst DNS):\n%s", want, resolv)
		}
	}
	hosts := read("hosts")
	for _, want := range []string{"# Kubernetes-managed hosts file", p.Status.PodIP + "\t" + p.Name, "127.1.2.3\talias.e2e.test\talias2.e2e.test"} {
		if !strings.Contains(hosts, want) {
			t.Errorf("/etc/hosts lacks %q:\n%s", want, hosts)
		}
	}
	if kubeletHosts, err := os.ReadFile(filepath.Join(n.kubelet.PodDir(string(p.UID)), "etc-hosts")); err != nil || string(kubeletHosts) != hosts {
		t.Errorf("/etc/hosts in the container is not kubelet's etc-hosts file (%v):\n%s", err, kubeletHosts)
	}
	if got := strings.TrimSpace(read("hostname")); got != p.Name {
		t.Errorf("hostname %q, want the pod's name %q", got, p.Name)
	}
	if got := read("hostfile"); got != "from the host\n" {
		t.Errorf("the hostPath file reads %q in the container, want %q", got, "from the host\n")
	}
	if got := strings.TrimSpace(read("hostfile-write")); got != "read-only" {
		t.Errorf("the read-only hostPath file is %s in the container", got)
	}
	if got := strings.TrimSpace(read("shared")); got != "hello from writer" {
		t.Errorf("the emptyDir shared with the writer container holds %q, want %q", got, "hello from writer")
	}
}

// checkProbes checks that containers whose probes pass become started and
// ready and are never restarted, and that a failing readiness probe keeps
// its container (and so the pod) unready without restarting it.
func checkProbes(t *testing.T, n *node) {
	check := func(p *corev1.Pod) error {
		if err := running()(p); err != nil {
			return err
		}
		for _, name := range []string{"http", "tcp", "exec"} {
			c := status(p, name)
			if c.Started == nil || !*c.Started || !c.Ready {
				return fmt.Errorf("container %s is not started and ready", name)
			}
		}
		if c := status(p, "unready"); c.Ready {
			return fmt.Errorf("container unready, whose readiness probe fails, is ready")
		}
		if got := condition(p, corev1.PodReady); got != corev1.ConditionFalse {
			return fmt.Errorf("pod condition Ready is %q with a container unready, want False", got)
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.RestartCount != 0 {
				return fmt.Errorf("container %s restarted %d times", c.Name, c.RestartCount)
			}
		}
		return nil
	}
	n.waitPod(t, "probes", 2*time.Minute, check)
	// Several probe periods more: still the same.
	time.Sleep(8 * time.Second)
	p := n.pod(t, "probes")
	if err := check(p); err != nil {
		t.Errorf("8 s later: %v\n%s", err, describe(p))
	}
}

// checkLiveness checks that kubelet restarts each container whose liveness
// probe (exec, HTTP, TCP) fails.
func checkLiveness(t *testing.T, n *node) {
	n.waitPod(t, "liveness", 3*time.Minute, func(p *corev1.Pod) error {
		for _, name := range []string{"exec", "http", "tcp"} {
			c := status(p, name)
			if c == nil || c.RestartCount < 1 || c.LastTerminationState.Terminated == nil {
				return fmt.Errorf("container %s, whose liveness probe fails, was not restarted", name)
			}
		}
		return nil
	})
	if log := n.kubelet.LogText(); !strings.Contains(log, "failed liveness probe") {
		t.Errorf("kubelet's log never says a container failed its liveness probe")
	}
}

// cgroupDir is the directory of process pid's cgroup in the hierarchy
// holding controller, or "" when no hierarchy has it.
func cgroupDir(t *testing.T, pid int, controller string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	mounts := cgroupMountsByController(t)
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[1] == "" { // v2
			m, ok := mounts[""]
			if !ok {
				continue
			}
			ctrls, _ := os.ReadFile(filepath.Join(m, f[2], "cgroup.controllers"))
			if slices.Contains(strings.Fields(string(ctrls)), controller) {
				return filepath.Join(m, f[2])
			}
			continue
		}
		if slices.Contains(strings.Split(f[1], ","), controller) {
			return filepath.Join(mounts[controller], f[2])
		}
	}
	return ""
}

// containerCgroup is the container's own cgroup of a cgroup directory of
// its process: the one named after the container id (the process may sit in
// a cgroup below it, as crun's does with systemd).
func containerCgroup(dir, id string) string {
	parts := strings.Split(dir, "/")
	i := slices.IndexFunc(parts, func(p string) bool { return strings.Contains(p, id) })
	if i < 0 {
		return dir
	}
	return strings.Join(parts[:i+1], "/")
}

// cgroupMountsByController maps each v1 controller to its hierarchy's
// mount point, and "" to the v2 mount point.
func cgroupMountsByController(t *testing.T) map[string]string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, _ := strings.Cut(sc.Text(), " - ")
		fields, postFields := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(postFields) < 3 {
			continue
		}
		switch postFields[0] {
		case "cgroup2":
			m[""] = fields[4]
		case "cgroup":
			for _, opt := range strings.Split(postFields[2], ",") {
				m[opt] = fields[4]
			}
		}
	}
	return m
}

// cgroupValue reads file in dir, "" when it does not exist.
func cgroupValue(dir, file string) string {
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// checkResources checks the resources pod's requests and limits in its
// container's cgroup (and kubelet's pod cgroup above it), read on the host
// through the container's process.
func checkResources(t *testing.T, n *node) {
	p := n.waitPod(t, "resources", 2*time.Minute, running())
	id := containerID(status(p, "limited"))
	pids, err := containerPids(id)
	if err != nil {
		t.Fatal(err)
	}
	pid := pids[0]
	want := func(controller string, files map[string][]string) {
		// The process's own cgroup: crun with the systemd driver limits a
		// "container" cgroup inside the scope, runc the scope itself.
		dir := cgroupDir(t, pid, controller)
		if dir == "" {
			t.Errorf("the container's process %d is in no %s cgroup", pid, controller)
			return
		}
		for file, values := range files {
			if got := cgroupValue(dir, file); !slices.Contains(values, got) {
				t.Errorf("%s/%s = %q, want %q", dir, file, got, values)
			}
		}
	}
	if p.Status.QOSClass != corev1.PodQOSBurstable {
		t.Errorf("kubelet gives the pod QoS class %q, want Burstable", p.Status.QOSClass)
	}
	mounts := cgroupMountsByController(t)
	_, v1 := mounts["memory"]
	memLimit := "memory.limit_in_bytes"
	if v1 {
		want("cpu", map[string][]string{"cpu.shares": {"256"}, "cpu.cfs_quota_us": {"50000"}, "cpu.cfs_period_us": {"100000"}})
	} else {
		// 256 shares as cpu.weight: runc's old linear mapping (10), or the
		// quadratic one of newer runtimes (35).
		want("cpu", map[string][]string{"cpu.weight": {"10", "35"}, "cpu.max": {"50000 100000"}})
		memLimit = "memory.max"
	}
	want("memory", map[string][]string{memLimit: {"67108864"}})
	// kubelet's own pod cgroup, the container cgroup's parent.
	if dir := containerCgroup(cgroupDir(t, pid, "memory"), id); dir != "" {
		if got := cgroupValue(filepath.Dir(dir), memLimit); got != "67108864" {
			t.Errorf("kubelet's pod cgroup %s has %s %q, want 67108864", filepath.Dir(dir), memLimit, got)
		}
	}
	if hugetlb := cgroupDir(t, pid, "hugetlb"); hugetlb != "" {
		file := "hugetlb.2MB.limit_in_bytes"
		if !v1 || strings.HasPrefix(hugetlb, mounts[""]+"/") {
			file = "hugetlb.2MB.max"
		}
		if got := cgroupValue(hugetlb, file); got != "4194304" {
			t.Errorf("%s/%s = %q, want 4194304 (hugepages-2Mi: 4Mi)", hugetlb, file, got)
		}
	} else {
		t.Logf("the container's cgroup has no hugetlb controller on this node (%s), so its hugepages-2Mi limit cannot apply; kubelet admitted the pod against the node's %d huge pages",
			strings.Join(strings.Fields(readFile(t, fmt.Sprintf("/proc/%d/cgroup", pid))), " "), hugepages2Mi)
		// kubelet sends hugepage limits for every container: pier drops them
		// with one warning, not one per container.
		var warnings []string
		for _, line := range strings.Split(n.pierd.LogText(), "\n") {
			if strings.HasPrefix(line, "W") && strings.Contains(line, "hugetlb") {
				warnings = append(warnings, line)
			}
		}
		if len(warnings) != 1 {
			t.Errorf("pierd logged %d warnings about the missing hugetlb controller, want 1:\n%s", len(warnings), strings.Join(warnings, "\n"))
		}
	}
	// Ephemeral storage is no cgroup resource: kubelet measures it, and a pod
	// within its limit is never found over it (see EphemeralStorageLimit).
	if log := n.kubelet.LogText(); strings.Contains(log, criticalEviction(p)) {
		t.Errorf("kubelet found the resources pod over its ephemeral storage limit:\n%s", grepLines(log, criticalEviction(p)))
	}
}

// checkEphemeral checks that kubelet's eviction manager, which measures the
// pod's storage through pier's container stats, finds the ephemeral pod
// over its limit. Static pods are critical: kubelet logs that it cannot
// evict it instead of evicting it.
func checkEphemeral(t *testing.T, n *node) {
	p := n.waitPod(t, "ephemeral", 2*time.Minute, running())
	deadline := time.Now().Add(90 * time.Second)
	want := criticalEviction(p)
	for !strings.Contains(n.kubelet.LogText(), want) {
		if time.Now().After(deadline) {
			stats, err := n.pierd.Runtime.ContainerStats(ctx(t), &runtimeapi.ContainerStatsRequest{ContainerId: containerID(status(p, "hog"))})
			t.Fatalf("kubelet never found the pod, which wrote 24 MiB in its root file system, over its 8 MiB ephemeral storage limit (no %s in its log); pier's ContainerStats: %v %v",
				want, stats, err)
		}
		time.Sleep(time.Second)
	}
}

// criticalEviction is what kubelet logs when it finds static pod p over a
// limit it evicts for.
func criticalEviction(p *corev1.Pod) string {
	return `"Eviction manager: cannot evict a critical pod" pod="default/` + p.Name + `"`
}

// checkOOM checks that kubelet reports the container that outgrew its
// memory limit as OOMKilled.
func checkOOM(t *testing.T, n *node) {
	p := n.waitPod(t, "oom", 2*time.Minute, func(p *corev1.Pod) error {
		if c := status(p, "hog"); c == nil || c.State.Terminated == nil {
			return fmt.Errorf("container hog has not terminated")
		}
		return nil
	})
	term := status(p, "hog").State.Terminated
	if term.Reason != "OOMKilled" || term.ExitCode != 137 {
		t.Errorf("container hog terminated with exit %d, reason %q; want 137, OOMKilled\n%s", term.ExitCode, term.Reason, describe(p))
	}
	if p.Status.Phase != corev1.PodFailed {
		t.Errorf("pod phase %s, want Failed", p.Status.Phase)
	}
}

// checkRestricted checks that the restricted pod runs as its user, without
// capabilities, with no_new_privs, a seccomp filter and a read-only root.
func checkRestricted(t *testing.T, n *node) {
	p := n.waitPod(t, "restricted", 2*time.Minute, running())
	out := n.readOutput(t, p, "out", time.Minute)
	if id := readFile(t, filepath.Join(out, "id")); !strings.HasPrefix(id, "uid=1000 gid=1000") {
		t.Errorf("the container runs as %q, want uid=1000 gid=1000", strings.TrimSpace(id))
	}
	st := map[string]string{}
	for _, line := range strings.Split(readFile(t, filepath.Join(out, "status")), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			st[k] = strings.TrimSpace(v)
		}
	}
	for k, v := range map[string]string{"CapPrm": "0000000000000000", "CapEff": "0000000000000000", "CapBnd": "0000000000000000", "CapAmb": "0000000000000000", "NoNewPrivs": "1"} {
		if st[k] != v {
			t.Errorf("%s: %q, want %q (status: %v)", k, st[k], v, st)
		}
	}
	// The pod asks for seccomp RuntimeDefault, as the restricted level
	// requires: the container runs under a filter (mode 2).
	if st["Seccomp"] != "2" {
		t.Errorf("Seccomp: %q, want 2 (a filter: the pod asks for RuntimeDefault)", st["Seccomp"])
	}
	// Where the node has AppArmor and apparmor_parser, pier's default
	// profile applies to a pod that asks for none.
	if aa := strings.TrimSpace(readFile(t, filepath.Join(out, "apparmor"))); appArmorNode() && !strings.HasPrefix(aa, "pier-default (enforce)") {
		t.Errorf("AppArmor: the container runs as %q, want pier-default (enforce)", aa)
	} else {
		t.Logf("AppArmor label: %q", aa)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(out, "rootfs"))); got != "read-only" {
		t.Errorf("readOnlyRootFilesystem: the root file system is %s", got)
	}
}

// appArmorNode reports whether pier applies AppArmor here: the kernel has
// it enabled and apparmor_parser is installed.
func appArmorNode() bool {
	b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled")
	_, perr := exec.LookPath("apparmor_parser")
	return err == nil && strings.TrimSpace(string(b)) == "Y" && perr == nil
}

// checkNever checks exit codes and termination messages of the never pod,
// and that kubelet restarts none of its containers.
func checkNever(t *testing.T, n *node) {
	p := n.waitPod(t, "never", 2*time.Minute, func(p *corev1.Pod) error {
		if p.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("phase %s, want Failed", p.Status.Phase)
		}
		for _, c := range p.Spec.Containers {
			if s := status(p, c.Name); s == nil || s.State.Terminated == nil {
				return fmt.Errorf("container %s has not terminated", c.Name)
			}
		}
		return nil
	})
	for name, want := range map[string]struct {
		code    int32
		reason  string
		message string
	}{
		"ok":          {0, "Completed", "all done"},
		"custom":      {7, "Error", "custom message"},
		"fallback":    {2, "Error", "first words\nlast words"},
		"fallback-ok": {0, "Completed", ""},
	} {
		term := status(p, name).State.Terminated
		if term.ExitCode != want.code || term.Reason != want.reason || strings.TrimSpace(term.Message) != want.message {
			t.Errorf("container %s terminated with exit %d, reason %q, message %q; want %d, %q, %q",
				name, term.ExitCode, term.Reason, term.Message, want.code, want.reason, want.message)
		}
	}
	time.Sleep(3 * time.Second)
	p = n.pod(t, "never")
	for _, c := range p.Status.ContainerStatuses {
		if c.RestartCount != 0 || c.State.Terminated == nil {
			t.Errorf("container %s of a restartPolicy Never pod was restarted\n%s", c.Name, describe(p))
		}
	}
}

// checkOnFailure checks that kubelet restarts the container that failed
// once, not the one that succeeded, and that the pod succeeds.
func checkOnFailure(t *testing.T, n *node) {
	p := n.waitPod(t, "onfailure", 2*time.Minute, func(p *corev1.Pod) error {
		if p.Status.Phase != corev1.PodSucceeded {
			return fmt.Errorf("phase %s, want Succeeded", p.Status.Phase)
		}
		return nil
	})
	flaky := status(p, "flaky")
	if flaky.RestartCount != 1 || flaky.LastTerminationState.Terminated == nil || flaky.LastTerminationState.Terminated.ExitCode != 3 ||
		flaky.State.Terminated == nil || flaky.State.Terminated.ExitCode != 0 || flaky.State.Terminated.Reason != "Completed" {
		t.Errorf("container flaky: want one restart after exit 3, then exit 0 (Completed)\n%s", describe(p))
	}
	if once := status(p, "once"); once.RestartCount != 0 || once.State.Terminated == nil || once.State.Terminated.ExitCode != 0 {
		t.Errorf("container once: want exit 0 and no restart\n%s", describe(p))
	}
}

// checkKilled kills the kill pod's container process from the host and
// checks that kubelet restarts the container.
func checkKilled(t *testing.T, n *node) {
	p := n.waitPod(t, "kill", 2*time.Minute, running())
	old := status(p, "victim")
	pids, err := containerPids(containerID(old))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p = n.waitPod(t, "kill", 90*time.Second, func(p *corev1.Pod) error {
		c := status(p, "victim")
		if c.RestartCount < 1 || c.State.Running == nil || c.ContainerID == old.ContainerID {
			return fmt.Errorf("container victim, whose process was killed, is not running again")
		}
		return nil
	})
	c := status(p, "victim")
	if c.RestartCount != 1 {
		t.Errorf("container victim restarted %d times, want 1\n%s", c.RestartCount, describe(p))
	}
	if last := c.LastTerminationState.Terminated; last == nil || last.ExitCode != 137 || last.Reason != "Error" {
		t.Errorf("container victim's last state: want terminated, exit 137, Error\n%s", describe(p))
	}
}

// checkShimKilled kills the shim monitor of the kill pod's orphan: pier
// reports the container Unknown (its exit was lost with the monitor), and
// kubelet stops it and starts it again.
func checkShimKilled(t *testing.T, n *node) {
	p := n.waitPod(t, "kill", 2*time.Minute, running())
	old := status(p, "orphan")
	monitor := shimMonitor(containerID(old))
	if monitor == 0 {
		t.Fatalf("no shim monitor found for container orphan (%s)", old.ContainerID)
	}
	if err := syscall.Kill(monitor, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p = n.waitPod(t, "kill", 90*time.Second, func(p *corev1.Pod) error {
		c := status(p, "orphan")
		if c.RestartCount < 1 || c.State.Running == nil || c.ContainerID == old.ContainerID {
			return fmt.Errorf("container orphan, whose shim monitor was killed, is not running again")
		}
		return nil
	})
	// Its processes were killed through the runtime; with their monitor
	// gone, whoever they were reparented to reaps them.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		pids, _ := containerPids(containerID(old))
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of the container whose shim was killed still run 10 s after its restart: %v", pids)
			break
		}
	}
	if last := status(p, "orphan").LastTerminationState.Terminated; last == nil || last.Reason != "Unknown" {
		t.Errorf("container orphan's last state: want terminated, reason Unknown (its exit was lost with its shim)\n%s", describe(p))
	}
}

// shimMonitor is the pid of container id's shim monitor ("pier-shim
// monitor id=<id> ..."), or 0.
func shimMonitor(id string) int {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range cmdlines {
		b, err := os.ReadFile(f)
		if err != nil || !strings.HasPrefix(string(b), "pier-shim\x00monitor\x00id="+id+"\x00") {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		return pid
	}
	return 0
}

// checkLogRotation waits until the chatty pod wrote all its lines and
// kubelet rotated its log, then reads every file of the log (the rotated
// ones kubelet compressed too) and checks that each line is there once,
// in order.
func checkLogRotation(t *testing.T, n *node) {
	p := n.waitPod(t, "chatty", 2*time.Minute, running())
	dir := filepath.Join(n.kubelet.PodLogDir(p), "chatty")
	deadline := time.Now().Add(2 * time.Minute)
	var prev, files, lines []string
	for {
		// Settled: the last line written, and the same files twice, a
		// rotation check (3 s) apart, none of them half-compressed.
		var err error
		files = logFiles(t, dir)
		lines, err = readLogs(dir, files)
		if err == nil && len(lines) > 0 && lines[len(lines)-1] == "end" && slices.Equal(files, prev) &&
			!slices.ContainsFunc(files, func(f string) bool { return strings.HasSuffix(f, ".tmp") }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the chatty container's log did not settle in 2 minutes (%v); files %v, %d lines\n%s", err, files, len(lines), describe(n.pod(t, "chatty")))
		}
		prev = files
		time.Sleep(4 * time.Second)
	}
	rotated := len(files) - 1
	t.Logf("log files: %v", files)
	if rotated < 2 || !slices.ContainsFunc(files, func(f string) bool { return strings.HasSuffix(f, ".gz") }) {
		t.Errorf("kubelet rotated the log %d times and compressed none, want at least 2 rotations and a compressed file: %v", rotated, files)
	}
	// kubelet renames the log file, then has pier reopen it.
	if reopens := strings.Count(n.pierd.LogText(), "RuntimeService/ReopenContainerLog"); reopens < rotated {
		t.Errorf("pier answered %d ReopenContainerLog requests for %d rotations", reopens, rotated)
	}
	want := make([]string, 0, chattyLines+1)
	for i := 1; i <= chattyLines; i++ {
		want = append(want, fmt.Sprintf("line %06d abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", i))
	}
	want = append(want, "end")
	if !slices.Equal(lines, want) {
		t.Errorf("the log files hold %d lines, want %d numbered lines and end, each once, in order: %s", len(lines), len(want), diffLines(lines, want))
	}
}

// logFiles lists a container's log files oldest first: the rotated ones
// (0.log.<timestamp>[.gz]) by timestamp, then 0.log.
func logFiles(t *testing.T, dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var rotated []string
	current := false
	for _, e := range entries {
		if e.Name() == "0.log" {
			current = true
		} else if strings.HasPrefix(e.Name(), "0.log.") {
			rotated = append(rotated, e.Name())
		}
	}
	slices.Sort(rotated)
	if current {
		rotated = append(rotated, "0.log")
	}
	return rotated
}

// readLogs returns the lines of a container's log files, in order.
func readLogs(dir string, files []string) ([]string, error) {
	var lines []string
	for _, f := range files {
		l, err := readCRILog(filepath.Join(dir, f))
		if err != nil {
			return nil, err
		}
		lines = append(lines, l...)
	}
	return lines, nil
}

// readCRILog returns the lines of a CRI log file (gzip-compressed if its
// name ends in .gz), joining partial lines.
func readCRILog(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		gz, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r = gz
	}
	var lines []string
	var partial strings.Builder
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// <RFC3339Nano time> <stream> <P|F> <content>
		f := strings.SplitN(sc.Text(), " ", 4)
		if len(f) < 3 {
			return nil, fmt.Errorf("%s: malformed CRI log line %q", path, sc.Text())
		}
		content := ""
		if len(f) == 4 {
			content = f[3]
		}
		partial.WriteString(content)
		if f[2] == "F" {
			lines = append(lines, partial.String())
			partial.Reset()
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return lines, nil
}

// diffLines describes where got first departs from want.
func diffLines(got, want []string) string {
	seen := map[string]int{}
	var dups []string
	for _, l := range got {
		if seen[l]++; seen[l] == 2 {
			dups = append(dups, l)
		}
	}
	var missing []string
	for _, l := range want {
		if seen[l] == 0 {
			missing = append(missing, l)
		}
	}
	first := ""
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			first = fmt.Sprintf("line %d is %q, want %q", i+1, got[i], want[i])
			break
		}
	}
	trunc := func(s []string) []string {
		if len(s) > 5 {
			return append(s[:5:5], fmt.Sprintf("... (%d in all)", len(s)))
		}
		return s
	}
	return fmt.Sprintf("%s; missing %q; duplicated %q", first, trunc(missing), trunc(dups))
}

// checkGC checks that kubelet's garbage collection removes the deleted pod's
// containers and sandbox (through pier), its logs and its directory.
func checkGC(t *testing.T, n *node, p *corev1.Pod, deletedAt time.Time) {
	logDir, podDir := n.kubelet.PodLogDir(p), n.kubelet.PodDir(string(p.UID))
	deadline := deletedAt.Add(3 * time.Minute)
	for {
		cs, ss := n.criPod(t, p.Name)
		var left []string
		if len(cs) > 0 {
			left = append(left, fmt.Sprintf("%d containers", len(cs)))
		}
		if len(ss) > 0 {
			left = append(left, fmt.Sprintf("%d sandboxes", len(ss)))
		}
		for _, d := range []string{logDir, podDir} {
			if _, err := os.Stat(d); err == nil {
				left = append(left, d)
			}
		}
		if len(left) == 0 {
			t.Logf("collected %s after the manifest was deleted", time.Since(deletedAt).Round(time.Second))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after the pod's manifest was deleted, kubelet has not collected %s", time.Since(deletedAt).Round(time.Second), strings.Join(left, ", "))
		}
		time.Sleep(2 * time.Second)
	}
}

// steady are the pods whose containers run without restarts once started.
var steady = []string{"order", "volumes", "probes", "resources", "ephemeral", "restricted", "kill", "chatty"}

type snapshot map[string]string // "pod/container" → "id restarts ready"

// steadySnapshot records the steady pods' running containers as kubelet
// reports them.
func steadySnapshot(t *testing.T, n *node) snapshot {
	s := snapshot{}
	for _, name := range steady {
		p := n.pod(t, name)
		if err := running()(p); err != nil {
			t.Errorf("pod %s: %v\n%s", name, err, describe(p))
		}
		for _, c := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
			if c.State.Running != nil {
				s[name+"/"+c.Name] = fmt.Sprintf("id %s restarts %d ready %v", c.ContainerID, c.RestartCount, c.Ready)
			}
		}
	}
	return s
}

// checkPierdRestart stops pierd (SIGTERM, or SIGKILL as a crash) under the
// running kubelet and starts it again, and checks that the pods' containers
// kept running throughout and that kubelet saw no restart.
func checkPierdRestart(t *testing.T, n *node, kill bool) {
	before := steadySnapshot(t, n)
	if t.Failed() {
		t.FailNow()
	}
	var pids []int
	for key, v := range before {
		_, id, _ := strings.Cut(strings.Fields(v)[1], "://")
		ps, err := containerPids(id)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		pids = append(pids, ps[0])
	}
	stop := n.pierd.Stop
	if kill {
		stop = n.pierd.Kill
	}
	if err := stop(); err != nil {
		t.Fatalf("stop pierd: %v", err)
	}
	// Long enough for kubelet's PLEG and probes to find the runtime gone.
	time.Sleep(5 * time.Second)
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Errorf("container process %d is gone while pierd is down: %v", pid, err)
		}
	}
	if err := n.pierd.Start(); err != nil {
		t.Fatalf("restart pierd: %v", err)
	}
	// Several relists, probes and syncs later.
	time.Sleep(15 * time.Second)
	after := steadySnapshot(t, n)
	for key, v := range before {
		if after[key] != v {
			t.Errorf("container %s: before pierd's restart %s, after %q", key, v, after[key])
		}
	}
	for key, v := range after {
		if _, ok := before[key]; !ok {
			t.Errorf("container %s appeared after pierd's restart: %s", key, v)
		}
	}
}
