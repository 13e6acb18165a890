package kubelet

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pier-runtime/pier/e2e/testenv"
)

// altHandler is what pier's second runtime handler, "alt", runs, which
// the RuntimeClass "alt" names: its platform ([runtimes.alt] platform),
// the binfmt_misc emulator the test registers for it (QEMU's name of the
// CPU, "" for none) and what uname -m prints in its pods. For a native
// handler: {"linux/amd64", "", "x86_64"} on an amd64 node.
var altHandler = struct {
	platform, emulator, uname string
}{"linux/arm64", "aarch64", "aarch64"}

// multiImg is a multi-arch image, pushed by pushMulti: the native busybox
// and Debian's busybox-static for arm64 under one tag, so that which
// variant a pod gets depends only on the runtime handler kubelet names.
const multiImg = "e2e/busybox-multi:1"

// platformAnnotation is the annotation of pier's image specs that names
// the image's platform.
const platformAnnotation = "io.pier.image.platform"

var pushMulti = sync.OnceValue(func() error {
	idx, err := testenv.BusyboxIndex()
	if err != nil {
		return err
	}
	_, err = reg.PushIndex(multiImg, idx)
	return err
})

// unamePod is a pod of one container, "arch", which prints uname -m and
// uname -r and stays; of the RuntimeClass runtimeClass unless "".
func unamePod(name, runtimeClass string) *corev1.Pod {
	c := ctr("arch", "uname -m; uname -r; "+idle)
	c.Image = reg.Ref(multiImg)
	p := newPod(name, c)
	if runtimeClass != "" {
		p.Spec.RuntimeClassName = &runtimeClass
	}
	return p
}

// TestKubeletRuntimeClass: kubelet, with a (fake) API server serving the
// RuntimeClass "alt" of pier's handler "alt" (whose pods run the platform
// altHandler names, emulated), runs a static pod of that RuntimeClass and
// one of none, from the same multi-arch image: the first pod's sandbox has
// handler alt, kubelet pulled its image for alt (pier holds the variant
// of alt's platform, for alt) and its container runs it; the second pod
// gets the native variant, beside it.
func TestKubeletRuntimeClass(t *testing.T) {
	parallel(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("the test emulates arm64 on an amd64 node")
	}
	if altHandler.emulator != "" {
		testenv.SkipUnlessForeign(t)
		// Unregistered after the node is torn down (cleanups run last
		// first). With P (preserve argv[0]), as Debian registers QEMU:
		// without it an applet the busybox shell runs (sleep) starts as
		// sh, since QEMU re-executes its own path for /proc/self/exe and
		// binfmt_misc replaces argv[0] with it.
		testenv.RegisterEmulator(t, altHandler.emulator, "PF")
	}
	if err := pushMulti(); err != nil {
		t.Fatalf("push %s: %v", multiImg, err)
	}
	api := startFakeAPI(t)
	api.add(t, "node.k8s.io/v1/runtimeclasses", &nodev1.RuntimeClass{
		TypeMeta:   metav1.TypeMeta{APIVersion: "node.k8s.io/v1", Kind: "RuntimeClass"},
		ObjectMeta: metav1.ObjectMeta{Name: "alt"},
		Handler:    "alt",
	})
	n := startNode(t, nodeOptions{
		pierConfig: fmt.Sprintf("[runtimes.alt]\npath = \"runc\"\nplatform = %q\n", altHandler.platform),
		kubelet: map[string]any{
			"contentType":  "application/json",
			"registerNode": true,
			// Without it kubelet pulls every image for the default handler.
			"featureGates": map[string]bool{"RuntimeClassInImageCriApi": true},
		},
		kubeletArgs: []string{"--kubeconfig", api.kubeconfig(t, t.TempDir())},
	})

	const native = "x86_64" // uname -m of amd64
	pods := []struct {
		name, runtimeClass, handler, uname string
	}{
		{"rc-alt", "alt", "alt", altHandler.uname},
		{"rc-default", "", "", native},
	}
	for _, p := range pods {
		if err := n.kubelet.WritePod(unamePod(p.name, p.runtimeClass)); err != nil {
			t.Fatal(err)
		}
	}
	release, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]string{}    // handler -> image ID its container runs
	ctrIDs := map[string]string{}    // pod -> its container's ID
	logs := map[string]string{}      // pod -> its container's log
	wantLog := map[string][]string{} // pod -> what its container prints
	for _, p := range pods {
		kp := n.waitPod(t, p.name, 3*time.Minute, running())
		podName := n.kubelet.PodName(p.name)

		// What the container printed: the CPU of the handler's platform,
		// on the host's kernel.
		log := filepath.Join(n.kubelet.PodLogDir(kp), "arch", "0.log")
		var lines []string
		deadline := time.Now().Add(time.Minute)
		for {
			lines, err = readCRILog(log)
			if err == nil && len(lines) >= 2 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		wantLog[p.name], logs[p.name] = []string{p.uname, strings.TrimSpace(string(release))}, log
		if !slices.Equal(lines, wantLog[p.name]) {
			t.Errorf("pod %s (runtimeClassName %q): uname -m; uname -r printed %q (%v), want %q", p.name, p.runtimeClass, lines, err, wantLog[p.name])
		}
		ctrIDs[p.name] = containerID(status(kp, "arch"))

		// Through pier's CRI: the sandbox's handler, and the image its
		// container runs, pulled for that handler.
		// (pier names the default handler's sandboxes by its name.)
		ctrs, sandboxes := n.criPod(t, podName)
		if len(sandboxes) != 1 || (sandboxes[0].RuntimeHandler == "alt") != (p.handler == "alt") {
			t.Errorf("pod %s: pier's sandboxes %v, want one of runtime handler %q", p.name, sandboxes, p.handler)
		}
		if len(ctrs) != 1 {
			t.Fatalf("pod %s: pier has containers %v, want one", p.name, ctrs)
		}
		st, err := n.pierd.Runtime.ContainerStatus(ctx(t), &runtimeapi.ContainerStatusRequest{ContainerId: ctrs[0].Id})
		if err != nil {
			t.Fatal(err)
		}
		if h := st.Status.GetImage().GetRuntimeHandler(); h != p.handler {
			t.Errorf("pod %s: its container's image spec names runtime handler %q, want %q", p.name, h, p.handler)
		}
		images[p.handler] = st.Status.GetImageId()
	}

	// kubelet pulled the image for each handler (PullImage's
	// ImageSpec.RuntimeHandler): pier holds the variant of each handler's
	// platform, named for that handler, and each pod's container runs its
	// handler's. A native alt shares the default handler's image.
	nativePlatform := "linux/" + runtime.GOARCH
	var found []string
	byHandler := map[string]*runtimeapi.Image{}
	for _, img := range n.images(t) {
		if slices.Contains(img.RepoTags, reg.Ref(multiImg)) {
			h := img.GetSpec().GetRuntimeHandler()
			byHandler[h] = img
			found = append(found, fmt.Sprintf("%s (handler %q, %s)", img.Id, h, img.GetSpec().GetAnnotations()[platformAnnotation]))
		}
	}
	if altHandler.platform == nativePlatform {
		if len(found) != 1 || images[""] != images["alt"] {
			t.Errorf("pier's images of %s: %v, and the pods run %v; want one image of %s, which both run", reg.Ref(multiImg), found, images, nativePlatform)
		}
	} else {
		for h, plat := range map[string]string{"": nativePlatform, "alt": altHandler.platform} {
			img := byHandler[h]
			if img == nil || img.GetSpec().GetAnnotations()[platformAnnotation] != plat || img.Id != images[h] {
				t.Errorf("pier's images of %s: %v, and the pods run %v; want one of %s pulled for handler %q, which its pod runs", reg.Ref(multiImg), found, images, plat, h)
			}
		}
		if len(found) != 2 {
			t.Errorf("pier's images of %s: %v; want two", reg.Ref(multiImg), found)
		}
	}

	// kubelet used the API server: it registered its node and made the
	// mirror pod of the RuntimeClass's pod.
	if api.get("/v1/nodes", "", nodeName) == nil {
		t.Errorf("kubelet did not register its node %s with the API server", nodeName)
	}
	mirror := api.get("/v1/pods", "default", n.kubelet.PodName("rc-alt"))
	if rc, _ := lookup(mirror, "spec.runtimeClassName").(string); rc != "alt" {
		t.Errorf("the API server has no mirror pod of %s with runtimeClassName alt: %v", n.kubelet.PodName("rc-alt"), mirror)
	}
	if !strings.Contains(n.kubelet.LogText(), `"Running pod with runtime handler" pod="default/`+n.kubelet.PodName("rc-alt")+`" runtimeHandler="alt"`) {
		t.Errorf("kubelet did not log that it runs %s with runtime handler alt", n.kubelet.PodName("rc-alt"))
	}

	// The fake stays consistent enough for kubelet: once its node synced,
	// kubelet watches its pods there, finds its mirror pods and neither
	// remakes nor deletes them, makes its node's lease; and the pods run
	// on, their first containers, which printed nothing more (an applet
	// the shell runs, sleep, works under emulation too).
	deadline := time.Now().Add(time.Minute)
	for api.served("GET /v1/pods watch") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("kubelet did not watch its pods on the API server in a minute; the fake served:\n%s", api.callSummary())
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // the first sync after the watch's initial events
	posts, deletes := api.served("POST /v1/pods"), api.served("DELETE /v1/pods")
	time.Sleep(12 * time.Second) // longer than kubelet's syncFrequency and its lease renewal period
	if p, d := api.served("POST /v1/pods"), api.served("DELETE /v1/pods"); p != posts || d != deletes {
		t.Errorf("kubelet made %d and deleted %d mirror pods in 12 s after it watched its pods: it does not find them consistent", p-posts, d-deletes)
	}
	if api.get("coordination.k8s.io/v1/leases", "kube-node-lease", nodeName) == nil {
		t.Errorf("kubelet made no lease for its node")
	}
	for _, p := range pods {
		kp := n.pod(t, p.name)
		if running()(kp) != nil || status(kp, "arch").RestartCount != 0 || containerID(status(kp, "arch")) != ctrIDs[p.name] {
			t.Errorf("pod %s: its first container, %s, does not run on:\n%s", p.name, ctrIDs[p.name], describe(kp))
		}
		if lines, err := readCRILog(logs[p.name]); !slices.Equal(lines, wantLog[p.name]) {
			t.Errorf("pod %s (runtimeClassName %q): its container printed %q (%v), want %q", p.name, p.runtimeClass, lines, err, wantLog[p.name])
		}
	}
}
