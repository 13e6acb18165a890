package cni

import (
	"bytes"
	"slices"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/pier-runtime/pier/internal/proc"
)

// strayWait bounds the wait for killed stray plugins to end.
const strayWait = 10 * time.Second

// endStrayPlugins kills the plugin processes still running for a pod
// (CNI_CONTAINERID in their environment) and waits for them to end. A
// pierd killed during a pod's ADD leaves its plugins running: an ADD that
// finished after the next pierd's DEL would leave what it made (an
// address, a veth, masquerade rules) with no pod to own it. pierd runs one
// plugin call at a time per pod, so whatever runs for a pod being torn
// down after an interruption is a stray.
func endStrayPlugins(containerID string) {
	want := []byte("CNI_CONTAINERID=" + containerID + "\x00")
	var pids []int
	for _, pid := range proc.Find("environ", func(env []byte) bool {
		return bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte{0}, want...))
	}) {
		klog.InfoS("Killing a CNI plugin left running by an interrupted pod network setup", "pod", containerID, "pid", pid)
		if unix.Kill(pid, unix.SIGKILL) == nil {
			pids = append(pids, pid)
		}
	}
	for deadline := time.Now().Add(strayWait); len(pids) > 0; time.Sleep(10 * time.Millisecond) {
		pids = slices.DeleteFunc(pids, proc.Ended)
		if time.Now().After(deadline) {
			klog.InfoS("CNI plugins of an interrupted pod network setup outlive SIGKILL", "pod", containerID, "pids", pids)
			return
		}
	}
}
