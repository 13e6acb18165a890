package installer

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestKubeletEndpoints(t *testing.T) {
	for _, tc := range []struct {
		name, config, flags string
		want                *endpoints
		config2, flags2     string // the files after applying want ("" to skip)
	}{
		{
			name:    "config only, image endpoint removed",
			config:  "kind: KubeletConfiguration\ncontainerRuntimeEndpoint: unix:///run/containerd/containerd.sock\nimageServiceEndpoint: unix:///run/containerd/containerd.sock\n",
			want:    &endpoints{Config: map[string]*string{keyRuntime: ptr(PierEndpoint), keyImage: nil}},
			config2: "kind: KubeletConfiguration\ncontainerRuntimeEndpoint: " + PierEndpoint + "\n",
		},
		{
			name:    "key missing: added",
			config:  "kind: KubeletConfiguration\n",
			want:    &endpoints{Config: map[string]*string{keyRuntime: ptr(PierEndpoint)}},
			config2: "kind: KubeletConfiguration\ncontainerRuntimeEndpoint: " + PierEndpoint + "\n",
		},
		{
			name:   "flag with a space and quotes",
			config: "kind: KubeletConfiguration\n",
			flags:  `KUBELET_KUBEADM_ARGS="--node-ip=10.0.0.1 --container-runtime-endpoint 'unix:///run/crio/crio.sock' --image-service-endpoint=unix:///run/crio/crio.sock"` + "\n",
			want:   &endpoints{Config: map[string]*string{}, Flags: map[string]*string{flagRuntime: ptr(PierEndpoint), flagImage: nil}},
			flags2: `KUBELET_KUBEADM_ARGS="--node-ip=10.0.0.1 --container-runtime-endpoint=` + PierEndpoint + `"` + "\n",
		},
		{
			name:   "first flag removed, quote kept",
			config: "kind: KubeletConfiguration\n",
			flags:  `KUBELET_KUBEADM_ARGS="--image-service-endpoint=unix:///x.sock --v=2"` + "\n",
			want:   &endpoints{Config: map[string]*string{}, Flags: map[string]*string{flagImage: nil}},
			flags2: `KUBELET_KUBEADM_ARGS=" --v=2"` + "\n",
		},
		{
			name:   "flag restored where the file lacks it",
			config: "kind: KubeletConfiguration\n",
			flags:  `KUBELET_KUBEADM_ARGS="--node-ip=10.0.0.1"` + "\n",
			want:   &endpoints{Config: map[string]*string{}, Flags: map[string]*string{flagRuntime: ptr("unix:///run/containerd/containerd.sock")}},
			flags2: `KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///run/containerd/containerd.sock --node-ip=10.0.0.1"` + "\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			mustWrite(t, filepath.Join(root, "c.yaml"), tc.config, 0o600)
			k := kubeletFiles{Config: "/c.yaml", Flags: "/f.env"}
			if tc.flags != "" {
				mustWrite(t, filepath.Join(root, "f.env"), tc.flags, 0o644)
			}
			h := &host{root: root}
			before, err := k.read(h)
			if err != nil {
				t.Fatal(err)
			}
			if err := k.apply(h, tc.want); err != nil {
				t.Fatal(err)
			}
			after, err := k.read(h)
			if err != nil {
				t.Fatal(err)
			}
			if !after.has(tc.want) {
				t.Errorf("after apply the files do not hold what was asked")
			}
			n := &fakeNode{root: root}
			if tc.config2 != "" {
				if got := read(t, n, "/c.yaml"); got != tc.config2 {
					t.Errorf("config:\n%s\nwant:\n%s", got, tc.config2)
				}
			}
			if tc.flags2 != "" {
				if got := read(t, n, "/f.env"); got != tc.flags2 {
					t.Errorf("flags:\n%s\nwant:\n%s", got, tc.flags2)
				}
			}
			// Applying what was read before restores it.
			if err := k.apply(h, before); err != nil {
				t.Fatal(err)
			}
			again, _ := k.read(h)
			if !again.has(before) || !before.has(again) {
				t.Errorf("restore: %+v, want %+v", again, before)
			}
		})
	}
	_, err := kubeletFiles{Config: "/missing.yaml"}.read(&host{root: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "--kubelet-config") {
		t.Errorf("a missing kubelet config: %v, want an error naming --kubelet-config", err)
	}
}
