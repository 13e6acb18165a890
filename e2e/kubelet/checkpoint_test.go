package kubelet

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKubeletCheckpoint: kubelet's checkpoint API (ContainerCheckpoint,
// beta, on by default), POST /checkpoint/{namespace}/{pod}/{container} on
// its authenticated port, reaches pier's CheckpointContainer: the archive
// lands in kubelet's checkpoints directory, 0600, and the container runs
// on. Where `criu check` fails, kubelet must answer pier's reason and the
// test stops there. Its own node: the API needs anonymous requests allowed.
func TestKubeletCheckpoint(t *testing.T) {
	parallel(t)
	n := startNode(t, nodeOptions{kubelet: map[string]any{
		"authentication": map[string]any{"anonymous": map[string]any{"enabled": true}, "webhook": map[string]any{"enabled": false}},
	}})
	if err := n.kubelet.WritePod(newPod("ckpt", ctr("counter", idle))); err != nil {
		t.Fatal(err)
	}
	before := status(n.waitPod(t, "ckpt", 2*time.Minute, running()), "counter")

	var cfg struct{ Port int }
	if b, err := os.ReadFile(filepath.Join(n.kubelet.Dir, "config.json")); err != nil || json.Unmarshal(b, &cfg) != nil || cfg.Port == 0 {
		t.Fatalf("kubelet's port from its config.json: %v", err)
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/checkpoint/default/%s/counter?timeout=60", cfg.Port, n.kubelet.PodName("ckpt"))
	// kubelet serves with a certificate of its own making.
	client := &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if out, cerr := exec.Command("criu", "check").CombinedOutput(); cerr != nil {
		says := "check` failed"
		if errors.Is(cerr, exec.ErrNotFound) {
			says = "install the criu package"
		}
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "FailedPrecondition") || !strings.Contains(string(body), says) {
			t.Fatalf("POST %s where criu check fails: %s %s, want 500 with pier's FailedPrecondition saying %q", url, resp.Status, body, says)
		}
		t.Skipf("CRIU cannot checkpoint on this host; kubelet answered %s: %s\n`criu check`: %s", resp.Status, body, out)
	}
	handler := runtimeHandler
	if handler == "" {
		handler = "runc"
	}
	if exec.Command(handler, "checkpoint", "--help").Run() != nil {
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "cannot checkpoint") {
			t.Fatalf("POST %s with %s, which cannot checkpoint: %s %s, want 500 saying so", url, handler, resp.Status, body)
		}
		t.Skipf("%s cannot checkpoint; kubelet answered %s: %s", handler, resp.Status, body)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s %s", url, resp.Status, body)
	}
	var items struct{ Items []string }
	if err := json.Unmarshal(body, &items); err != nil || len(items.Items) != 1 {
		t.Fatalf("kubelet's answer %s: %v", body, err)
	}
	archive := items.Items[0]
	if dir := filepath.Join(n.kubelet.RootDir, "checkpoints"); filepath.Dir(archive) != dir {
		t.Errorf("archive %s, want it in %s", archive, dir)
	}
	if fi, err := os.Lstat(archive); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Errorf("archive: %v %v, want a regular file 0600", fi, err)
	}
	out, err := exec.Command("tar", "-tf", archive).Output()
	for _, want := range []string{"checkpoint/inventory.img", "config.dump", "spec.dump", "rootfs-diff.tar"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("archive lacks %s (%v): %s", want, err, out)
		}
	}
	after := status(n.waitPod(t, "ckpt", time.Minute, running()), "counter")
	if after.ContainerID != before.ContainerID || after.RestartCount != 0 {
		t.Errorf("the container did not run on: before %s, after %s (%d restarts)", before.ContainerID, after.ContainerID, after.RestartCount)
	}
}
