// Package deploy_test checks the Helm chart deploy/helm/pier with the helm
// binary (make test-deps installs it): it lints the chart, renders it with
// its default values and with each of ci/*.yaml, decodes every object
// strictly into the Kubernetes API types and checks what the installer, the
// RuntimeClasses, the pier configuration drop-in and the uninstall hook must
// be. It also keeps deploy/manifests, the chart rendered for kubectl, in
// step with the chart: `make manifests` (go test -run TestManifests -update)
// writes them.
package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/BurntSushi/toml"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
)

var update = flag.Bool("update", false, "rewrite deploy/manifests from the chart (make manifests)")

const (
	chart     = "helm/pier"
	release   = "pier"
	namespace = "kube-system"
	// kubeVersion is the Kubernetes version helm renders for: that of the
	// k8s.io/api module the objects are decoded with.
	kubeVersion = "1.37.0"

	runtimeLabel  = "pier-runtime.github.io/runtime"
	hookDaemonSet = "daemonset.yaml"
)

// helmPath finds the helm binary.
func helmPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("helm")
	if err != nil {
		t.Fatalf("no helm binary (`make test-deps` installs it): %v", err)
	}
	return path
}

// helm runs helm in this directory and returns its standard output.
func helm(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(helmPath(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// render is `helm template` of the chart with a values file ("" for the
// defaults) and more flags.
func render(t *testing.T, values string, flags ...string) string {
	t.Helper()
	args := []string{"template", release, chart, "--namespace", namespace, "--kube-version", kubeVersion}
	if values != "" {
		args = append(args, "--values", filepath.Join(chart, values))
	}
	return helm(t, append(args, flags...)...)
}

// valuesFiles are the chart's non-default values files, ci/*.yaml.
func valuesFiles(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join(chart, "ci", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files in %s/ci: %v", chart, err)
	}
	for i, f := range files {
		files[i], _ = filepath.Rel(chart, f)
	}
	return files
}

func TestLint(t *testing.T) {
	for _, values := range append([]string{""}, valuesFiles(t)...) {
		args := []string{"lint", "--strict", "--kube-version", kubeVersion, chart}
		if values != "" {
			args = append(args, "--values", filepath.Join(chart, values))
		}
		out := helm(t, args...)
		if !strings.Contains(out, "0 chart(s) failed") {
			t.Errorf("helm lint (%s):\n%s", values, out)
		}
	}
}

// TestSchema checks that values.schema.json refuses what it should.
func TestSchema(t *testing.T) {
	for _, set := range []string{
		"bogus=1",
		"cgroupDriver=cgroups",
		"installer.timeout=10",
		"image.digest=latest",
		"kubelet.switch=yes",
		"mirrors.docker\\.io[0]=mirror.internal",
		"handlers.kata.binary=/opt/kata",
		"runtimeClasses.handlers[0]=Kata_QEMU",
	} {
		cmd := exec.Command(helmPath(t), "template", release, chart, "--kube-version", kubeVersion, "--set", set)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "schema") {
			t.Errorf("--set %s: want a schema error, got %v:\n%.400s", set, err, out)
		}
	}
}

// want is what a rendering must contain.
type want struct {
	fullname         string
	image            string
	pullPolicy       corev1.PullPolicy
	pullSecrets      []corev1.LocalObjectReference
	switchKubelet    bool
	kubelet          [3]string // config, flags, unit
	timeout          string
	extraArgs        []string
	priorityClass    string
	podAnnotations   map[string]string
	nodeSelector     map[string]string
	tolerations      []corev1.Toleration
	affinity         bool
	classes          map[string]string // RuntimeClass name -> handler
	config           map[string]any    // the drop-in, as decoded TOML
	uninstall        bool
	uninstallTimeout string
	backoffLimit     int32
	deadline         int64
}

// defaults is what the default values render.
var defaults = want{
	fullname:         "pier",
	image:            "ghcr.io/pier-runtime/pier:0.1.0",
	pullPolicy:       corev1.PullIfNotPresent,
	kubelet:          [3]string{"/var/lib/kubelet/config.yaml", "/var/lib/kubelet/kubeadm-flags.env", "kubelet.service"},
	timeout:          "10m",
	priorityClass:    "system-node-critical",
	nodeSelector:     map[string]string{"kubernetes.io/os": "linux"},
	tolerations:      []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
	classes:          map[string]string{"pier-runc": "runc", "pier-crun": "crun"},
	config:           map[string]any{},
	uninstall:        true,
	uninstallTimeout: "15m",
	backoffLimit:     2,
	deadline:         1200,
}

// changed is defaults with what change changes.
func changed(change func(*want)) want {
	w := defaults
	change(&w)
	return w
}

// cases are the expectations for the default values ("") and for each of
// ci/*.yaml.
var cases = map[string]want{
	"": defaults,
	"ci/switch-values.yaml": changed(func(w *want) {
		w.fullname = "pier-runtime"
		w.image = "registry.example.com/pier/pier@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		w.pullPolicy = corev1.PullAlways
		w.pullSecrets = []corev1.LocalObjectReference{{Name: "registry-credentials"}}
		w.switchKubelet = true
		w.kubelet = [3]string{"/etc/kubernetes/kubelet.yaml", "/etc/default/kubelet", "kubelet-custom.service"}
		w.timeout = "20m"
		w.extraArgs = []string{"--payload=/opt/pier"}
		w.podAnnotations = map[string]string{"example.com/owner": "platform"}
		w.config = map[string]any{
			"cgroup_driver":   "systemd",
			"default_runtime": "crun",
			"log_verbosity":   int64(2),
			"image": map[string]any{
				"max_concurrent_downloads": int64(5),
				"pinned_images":            []any{"registry.k8s.io/pause:3.10"},
			},
			"metrics": map[string]any{"address": "127.0.0.1:9191"},
			"registries": map[string]any{
				"docker.io": map[string]any{
					"mirrors":      []any{"https://mirror.internal:5000", "http://10.0.0.1:5000"},
					"mirrors_only": true,
				},
				"quay.io": map[string]any{"mirrors": []any{"https://quay-mirror.internal"}},
			},
			"runtimes": map[string]any{
				"crun":  map[string]any{"path": "/usr/local/bin/crun", "allowed_annotations": []any{"run.oci.*"}},
				"runsc": map[string]any{"path": "/usr/local/bin/runsc"},
			},
			"security": map[string]any{"seccomp_default": "runtime/default"},
		}
	}),
	"ci/minimal-values.yaml": changed(func(w *want) {
		w.fullname = "pier-runtime"
		w.image = "ghcr.io/pier-runtime/pier:0.1.0-rc.1"
		w.priorityClass = ""
		w.nodeSelector = map[string]string{"kubernetes.io/os": "linux", "example.com/pier": "true"}
		w.tolerations = []corev1.Toleration{{
			Key: "example.com/dedicated", Operator: corev1.TolerationOpEqual, Value: "pier", Effect: corev1.TaintEffectNoSchedule,
		}}
		w.affinity = true
		w.classes = map[string]string{}
		w.uninstall = false
	}),
	"ci/classes-values.yaml": changed(func(w *want) {
		w.classes = map[string]string{"node-runc": "runc", "node-crun": "crun", "node-runsc": "runsc"}
		w.uninstallTimeout = "30m"
		w.backoffLimit = 0
		w.deadline = 2400
		w.config = map[string]any{
			"metrics":  map[string]any{"address": "127.0.0.1:9091"},
			"runtimes": map[string]any{"runsc": map[string]any{"path": "runsc"}},
		}
	}),
}

// decoder decodes strictly: an unknown or duplicate field is an error.
var decoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// decodeAll splits a rendering into its documents and decodes each.
func decodeAll(t *testing.T, out string) []runtime.Object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(out)))
	var objs []runtime.Object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("split the rendering: %v", err)
		}
		if isEmpty(doc) {
			continue
		}
		obj, _, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("decode: %v\n%s", err, doc)
		}
		objs = append(objs, obj)
	}
}

// isEmpty reports whether a YAML document holds only comments.
func isEmpty(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// rendering is a chart's objects, by kind and name.
type rendering map[string]runtime.Object

func key(obj runtime.Object) string {
	m := obj.(metav1.Object)
	return fmt.Sprintf("%T/%s", obj, m.GetName())
}

func get[T runtime.Object](t *testing.T, r rendering, name string) T {
	t.Helper()
	var zero T
	obj, ok := r[fmt.Sprintf("%T/%s", zero, name)]
	if !ok {
		t.Fatalf("no %T %q in the rendering (have %v)", zero, name, slices.Sorted(maps.Keys(r)))
	}
	return obj.(T)
}

func TestChart(t *testing.T) {
	files := valuesFiles(t)
	for _, f := range files {
		if _, ok := cases[f]; !ok {
			t.Errorf("%s has no expectations in cases: add them", f)
		}
	}
	for _, values := range slices.Sorted(maps.Keys(cases)) {
		w := cases[values]
		name := values
		if name == "" {
			name = "defaults"
		}
		t.Run(filepath.Base(name), func(t *testing.T) {
			if values != "" && !slices.Contains(files, values) {
				t.Fatalf("no values file %s", values)
			}
			objs := decodeAll(t, render(t, values))
			r := rendering{}
			for _, obj := range objs {
				if _, dup := r[key(obj)]; dup {
					t.Errorf("%s rendered twice", key(obj))
				}
				r[key(obj)] = obj
				checkMeta(t, obj, w)
			}
			ds := checkInstaller(t, r, w)
			checkRBAC(t, r, w)
			checkClasses(t, r, w)
			checkConfig(t, r, w)
			checkUninstall(t, r, w, ds)
		})
	}
}

// checkMeta checks what every object carries: the common labels, the
// release's namespace (so that the plain manifests need no -n), and hook
// annotations only on the uninstall hook's objects.
func checkMeta(t *testing.T, obj runtime.Object, w want) {
	m := obj.(metav1.Object)
	labels := m.GetLabels()
	for _, l := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
		if labels[l] == "" {
			t.Errorf("%s: no label %s", key(obj), l)
		}
	}
	if labels["app.kubernetes.io/instance"] != release || labels["helm.sh/chart"] != "pier-0.1.0" || labels["app.kubernetes.io/version"] != "0.1.0" {
		t.Errorf("%s: labels %v", key(obj), labels)
	}
	switch obj.(type) {
	case *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *nodev1.RuntimeClass:
		if m.GetNamespace() != "" {
			t.Errorf("%s: a cluster object with namespace %q", key(obj), m.GetNamespace())
		}
	default:
		if m.GetNamespace() != namespace {
			t.Errorf("%s: namespace %q, want %q", key(obj), m.GetNamespace(), namespace)
		}
	}
	hook := strings.HasSuffix(m.GetName(), "-uninstall")
	if got := m.GetAnnotations()["helm.sh/hook"]; hook != (got != "") {
		t.Errorf("%s: hook annotation %q", key(obj), got)
	}
	if hook {
		a := m.GetAnnotations()
		if a["helm.sh/hook"] != "post-delete" || a["helm.sh/hook-delete-policy"] != "before-hook-creation,hook-succeeded" || a["helm.sh/hook-weight"] == "" {
			t.Errorf("%s: hook annotations %v", key(obj), a)
		}
	}
}

// checkInstaller checks the installer DaemonSet and returns it.
func checkInstaller(t *testing.T, r rendering, w want) *appsv1.DaemonSet {
	ds := get[*appsv1.DaemonSet](t, r, w.fullname)
	checkDaemonSet(t, ds, w)
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	args := installerArgs(w)
	if want := append([]string{"install", "--wait", "--timeout=" + w.timeout}, args...); !reflect.DeepEqual(c.Args, want) {
		t.Errorf("installer args\n got %q\nwant %q", c.Args, want)
	}
	if p := c.ReadinessProbe; p == nil || p.Exec == nil {
		t.Errorf("installer: no exec readiness probe")
	} else if want := append([]string{"/usr/local/bin/pier-install", "status"}, args...); !reflect.DeepEqual(p.Exec.Command, want) {
		t.Errorf("readiness probe\n got %q\nwant %q", p.Exec.Command, want)
	}
	if spec.ServiceAccountName != w.fullname {
		t.Errorf("installer's service account %q", spec.ServiceAccountName)
	}
	sa := get[*corev1.ServiceAccount](t, r, w.fullname)
	if sa.AutomountServiceAccountToken == nil || !*sa.AutomountServiceAccountToken {
		t.Errorf("the installer's ServiceAccount does not mount its token")
	}
	config := volume(t, spec, "config")
	if config.ConfigMap == nil || config.ConfigMap.Name != w.fullname+"-config" || config.ConfigMap.Optional != nil {
		t.Errorf("installer's config volume %+v", config.VolumeSource)
	}
	ann := ds.Spec.Template.Annotations
	if ann["checksum/config"] == "" {
		t.Errorf("installer pods: no checksum/config annotation: %v", ann)
	}
	for k, v := range w.podAnnotations {
		if ann[k] != v {
			t.Errorf("installer pods: annotation %s=%q, want %q", k, ann[k], v)
		}
	}
	return ds
}

// installerArgs are the flags install, uninstall and status share.
func installerArgs(w want) []string {
	args := []string{"--host-root=/host", "--config-dir=/etc/pier-install/config.d"}
	if w.switchKubelet {
		args = append(args, "--switch-kubelet")
	}
	args = append(args, "--kubelet-config="+w.kubelet[0], "--kubelet-flags="+w.kubelet[1], "--kubelet-unit="+w.kubelet[2])
	return append(args, w.extraArgs...)
}

// checkDaemonSet checks what the installer and the uninstall DaemonSet
// share: the node's root at /host, privileged as root, the node's name, the
// scheduling.
func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet, w want) {
	name := ds.Name
	sel, tmpl := ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels
	for k, v := range sel {
		if tmpl[k] != v {
			t.Errorf("%s: the selector %v does not select the pods %v", name, sel, tmpl)
		}
	}
	if u := ds.Spec.UpdateStrategy; u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil || u.RollingUpdate.MaxUnavailable.String() != "1" {
		t.Errorf("%s: update strategy %+v", name, u)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || spec.HostPID || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("%s: hostNetwork %v hostPID %v dnsPolicy %s", name, spec.HostNetwork, spec.HostPID, spec.DNSPolicy)
	}
	if spec.PriorityClassName != w.priorityClass {
		t.Errorf("%s: priority class %q, want %q", name, spec.PriorityClassName, w.priorityClass)
	}
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds != 60 {
		t.Errorf("%s: terminationGracePeriodSeconds %v", name, spec.TerminationGracePeriodSeconds)
	}
	if !reflect.DeepEqual(spec.NodeSelector, w.nodeSelector) {
		t.Errorf("%s: nodeSelector %v, want %v", name, spec.NodeSelector, w.nodeSelector)
	}
	if !reflect.DeepEqual(spec.Tolerations, w.tolerations) {
		t.Errorf("%s: tolerations %+v, want %+v", name, spec.Tolerations, w.tolerations)
	}
	if (spec.Affinity != nil) != w.affinity {
		t.Errorf("%s: affinity %+v", name, spec.Affinity)
	}
	if !reflect.DeepEqual(spec.ImagePullSecrets, w.pullSecrets) {
		t.Errorf("%s: imagePullSecrets %v, want %v", name, spec.ImagePullSecrets, w.pullSecrets)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers", name, len(spec.Containers))
	}
	c := spec.Containers[0]
	if c.Image != w.image || c.ImagePullPolicy != w.pullPolicy {
		t.Errorf("%s: image %s (%s), want %s (%s)", name, c.Image, c.ImagePullPolicy, w.image, w.pullPolicy)
	}
	if sc := c.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged || sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("%s: not privileged as root: %+v", name, sc)
	}
	if len(c.Env) != 1 || c.Env[0].Name != "NODE_NAME" || c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.FieldRef == nil || c.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("%s: env %+v, want NODE_NAME from spec.nodeName", name, c.Env)
	}
	host := volume(t, spec, "host-root")
	if host.HostPath == nil || host.HostPath.Path != "/" {
		t.Errorf("%s: host-root is %+v, want the hostPath /", name, host.VolumeSource)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m
	}
	if m := mounts["host-root"]; m.MountPath != "/host" || m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("%s: host-root mounted %+v, want at /host, HostToContainer", name, m)
	}
	if m := mounts["config"]; m.MountPath != "/etc/pier-install/config.d" || !m.ReadOnly {
		t.Errorf("%s: config mounted %+v, want read-only at /etc/pier-install/config.d", name, m)
	}
}

func volume(t *testing.T, spec corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

// checkRBAC checks the installer's rights: its nodes, nothing else.
func checkRBAC(t *testing.T, r rendering, w want) {
	role := get[*rbacv1.ClusterRole](t, r, w.fullname)
	nodes := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "patch", "update"}}}
	if !reflect.DeepEqual(role.Rules, nodes) {
		t.Errorf("installer's rules %+v, want %+v", role.Rules, nodes)
	}
	crb := get[*rbacv1.ClusterRoleBinding](t, r, w.fullname)
	checkBinding(t, crb.RoleRef, crb.Subjects, "ClusterRole", w.fullname)
}

func checkBinding(t *testing.T, ref rbacv1.RoleRef, subjects []rbacv1.Subject, kind, name string) {
	t.Helper()
	want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: namespace}}
	if ref.Kind != kind || ref.Name != name || ref.APIGroup != "rbac.authorization.k8s.io" || !reflect.DeepEqual(subjects, want) {
		t.Errorf("binding %s %s: %+v to %+v", kind, name, ref, subjects)
	}
}

// checkClasses checks the RuntimeClasses: the handlers asked for, scheduled
// onto pier's nodes only.
func checkClasses(t *testing.T, r rendering, w want) {
	got := map[string]string{}
	for _, obj := range r {
		rc, ok := obj.(*nodev1.RuntimeClass)
		if !ok {
			continue
		}
		got[rc.Name] = rc.Handler
		if rc.Scheduling == nil || !reflect.DeepEqual(rc.Scheduling.NodeSelector, map[string]string{runtimeLabel: "pier"}) {
			t.Errorf("RuntimeClass %s: scheduling %+v, want nodeSelector %s=pier", rc.Name, rc.Scheduling, runtimeLabel)
		}
	}
	if !reflect.DeepEqual(got, w.classes) {
		t.Errorf("RuntimeClasses %v, want %v", got, w.classes)
	}
}

// checkConfig checks the configuration drop-in: TOML with the keys asked
// for, which pierd's own `config check` accepts.
func checkConfig(t *testing.T, r rendering, w want) {
	cm := get[*corev1.ConfigMap](t, r, w.fullname+"-config")
	if len(cm.Data) != 1 {
		t.Errorf("config ConfigMap has %d keys, want 1", len(cm.Data))
	}
	dropIn, ok := cm.Data["50-helm.toml"]
	if !ok {
		t.Fatalf("no 50-helm.toml in the config ConfigMap: %v", cm.Data)
	}
	got := map[string]any{}
	if _, err := toml.Decode(dropIn, &got); err != nil {
		t.Fatalf("50-helm.toml: %v\n%s", err, dropIn)
	}
	if !reflect.DeepEqual(got, w.config) {
		t.Errorf("50-helm.toml\n got %#v\nwant %#v\n%s", got, w.config, dropIn)
	}
	// pierd reads /etc/pier/config.toml, then config.d/*.toml beside it.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "config.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.d", "50-helm.toml"), []byte(dropIn), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(pierd(t), "config", "check", "--config", filepath.Join(dir, "config.toml")).CombinedOutput()
	if err != nil {
		t.Errorf("pierd config check: %v\n%s\n%s", err, out, dropIn)
	}
}

var (
	pierdOnce sync.Once
	pierdPath string
	pierdErr  error
)

// pierd builds cmd/pierd once, for its `config check`.
func pierd(t *testing.T) string {
	t.Helper()
	pierdOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pier-chart-test-")
		if err != nil {
			pierdErr = err
			return
		}
		pierdPath = filepath.Join(dir, "pierd")
		out, err := exec.Command("go", "build", "-o", pierdPath, "../cmd/pierd").CombinedOutput()
		if err != nil {
			pierdErr = fmt.Errorf("build pierd: %v\n%s", err, out)
		}
	})
	if pierdErr != nil {
		t.Fatal(pierdErr)
	}
	return pierdPath
}

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if pierdPath != "" {
		os.RemoveAll(filepath.Dir(pierdPath))
	}
	os.Exit(code)
}

// checkUninstall checks the post-delete hook: its rights, the uninstall
// DaemonSet kept in its ConfigMap (the installer's pod with uninstall in
// place of install) and the Job that runs it.
func checkUninstall(t *testing.T, r rendering, w want, installer *appsv1.DaemonSet) {
	name := w.fullname + "-uninstall"
	if !w.uninstall {
		for k := range r {
			if strings.HasSuffix(k, "/"+name) {
				t.Errorf("uninstall.enabled=false, yet %s is rendered", k)
			}
		}
		return
	}
	sa := get[*corev1.ServiceAccount](t, r, name)
	if sa.AutomountServiceAccountToken == nil || !*sa.AutomountServiceAccountToken {
		t.Errorf("the hook's ServiceAccount does not mount its token")
	}
	nodes := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch", "patch", "update"}}}
	if rules := get[*rbacv1.ClusterRole](t, r, name).Rules; !reflect.DeepEqual(rules, nodes) {
		t.Errorf("hook's cluster rules %+v, want %+v", rules, nodes)
	}
	crb := get[*rbacv1.ClusterRoleBinding](t, r, name)
	checkBinding(t, crb.RoleRef, crb.Subjects, "ClusterRole", name)
	daemonSets := []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, Verbs: []string{"get", "list", "create", "delete"}}}
	if rules := get[*rbacv1.Role](t, r, name).Rules; !reflect.DeepEqual(rules, daemonSets) {
		t.Errorf("hook's namespace rules %+v, want %+v", rules, daemonSets)
	}
	rb := get[*rbacv1.RoleBinding](t, r, name)
	checkBinding(t, rb.RoleRef, rb.Subjects, "Role", name)

	// The uninstall DaemonSet.
	cm := get[*corev1.ConfigMap](t, r, name)
	objs := decodeAll(t, cm.Data[hookDaemonSet])
	if len(objs) != 1 {
		t.Fatalf("the hook's ConfigMap holds %d objects, want a DaemonSet", len(objs))
	}
	ds, ok := objs[0].(*appsv1.DaemonSet)
	if !ok {
		t.Fatalf("the hook's ConfigMap holds a %T, want a DaemonSet", objs[0])
	}
	if ds.Name != name || ds.Namespace != namespace {
		t.Errorf("uninstall DaemonSet %s/%s, want %s/%s", ds.Namespace, ds.Name, namespace, name)
	}
	checkDaemonSet(t, ds, w)
	if reflect.DeepEqual(ds.Spec.Selector, installer.Spec.Selector) {
		t.Errorf("the uninstall DaemonSet selects the installer's pods: %v", ds.Spec.Selector)
	}
	// The installer's pod, but uninstalling, with no readiness probe, the
	// hook's service account and a config that may be gone.
	pod := installer.Spec.Template.Spec.DeepCopy()
	c := &pod.Containers[0]
	c.Name = "uninstaller"
	c.Args = append([]string{"uninstall"}, c.Args[1:]...)
	c.ReadinessProbe = nil
	pod.ServiceAccountName = name
	for i := range pod.Volumes {
		if pod.Volumes[i].ConfigMap != nil {
			pod.Volumes[i].ConfigMap.Optional = ptr.To(true)
		}
	}
	if got := ds.Spec.Template.Spec; !reflect.DeepEqual(&got, pod) {
		t.Errorf("uninstall pod\n got %+v\nwant %+v", got, *pod)
	}

	// The Job.
	job := get[*batchv1.Job](t, r, name)
	weight := func(obj runtime.Object) int {
		w, err := strconv.Atoi(obj.(metav1.Object).GetAnnotations()["helm.sh/hook-weight"])
		if err != nil {
			t.Errorf("%s: hook weight: %v", key(obj), err)
		}
		return w
	}
	for k, obj := range r {
		if strings.HasSuffix(k, "/"+name) && obj != job && weight(obj) >= weight(job) {
			t.Errorf("%s (weight %d) is not created before the Job (weight %d)", k, weight(obj), weight(job))
		}
	}
	if job.Spec.BackoffLimit == nil || *job.Spec.BackoffLimit != w.backoffLimit || job.Spec.ActiveDeadlineSeconds == nil || *job.Spec.ActiveDeadlineSeconds != w.deadline {
		t.Errorf("Job: backoffLimit %v activeDeadlineSeconds %v", job.Spec.BackoffLimit, job.Spec.ActiveDeadlineSeconds)
	}
	spec := job.Spec.Template.Spec
	if spec.ServiceAccountName != name || spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("Job: service account %q, restart policy %s", spec.ServiceAccountName, spec.RestartPolicy)
	}
	jc := spec.Containers[0]
	wantArgs := []string{"uninstall-cluster", "--daemonset=/etc/pier-uninstall/" + hookDaemonSet, "--namespace=" + namespace, "--timeout=" + w.uninstallTimeout}
	if jc.Image != w.image || !reflect.DeepEqual(jc.Args, wantArgs) {
		t.Errorf("Job: %s %q, want %s %q", jc.Image, jc.Args, w.image, wantArgs)
	}
	v := volume(t, spec, "daemonset")
	if v.ConfigMap == nil || v.ConfigMap.Name != name || len(jc.VolumeMounts) != 1 || jc.VolumeMounts[0].Name != "daemonset" || jc.VolumeMounts[0].MountPath != "/etc/pier-uninstall" {
		t.Errorf("Job: the DaemonSet's ConfigMap is not at /etc/pier-uninstall: %+v %+v", v.VolumeSource, jc.VolumeMounts)
	}
}

// manifests are the plain manifests: the chart with its default values for
// kubectl apply, the uninstall hook apart. Each header ends with the
// command that renders the rest.
var manifests = []struct {
	file, header string
	flags        []string
}{
	{"pier.yaml", `# pier for clusters without Helm: kubectl apply -f deploy/manifests/pier.yaml
# installs pier on every Linux node (the kubelets keep their runtime). To
# uninstall: kubectl delete -f deploy/manifests/pier.yaml, then apply
# pier-uninstall.yaml (see there).
`, []string{"--no-hooks"}},
	{"pier-uninstall.yaml", `# Removes pier from every node once pier.yaml is deleted (never while its
# installer runs): its Job starts an uninstall DaemonSet, waits until no node
# is labelled pier-runtime.github.io/installed, and deletes it.
#   kubectl delete -f deploy/manifests/pier.yaml
#   kubectl apply -f deploy/manifests/pier-uninstall.yaml
#   kubectl -n kube-system wait --for=condition=complete --timeout=20m job/pier-uninstall
#   kubectl delete -f deploy/manifests/pier-uninstall.yaml
# Helm runs these objects itself, as the chart's post-delete hook; here their
# helm.sh/hook annotations mean nothing.
`, []string{"--show-only", "templates/uninstall.yaml"}},
}

// generated is the end of a manifest's header: how it was made.
func generated(flags []string) string {
	return fmt.Sprintf(`#
# Generated by make manifests from the chart's default values:
#   helm template %s deploy/%s --namespace %s --kube-version %s %s
# Do not edit: change deploy/helm/pier and run make manifests.
`, release, chart, namespace, kubeVersion, strings.Join(flags, " "))
}

// TestManifests checks that deploy/manifests is the chart's rendering; with
// -update (make manifests) it writes it.
func TestManifests(t *testing.T) {
	for _, m := range manifests {
		want := m.header + generated(m.flags) + render(t, "", m.flags...)
		path := filepath.Join("manifests", m.file)
		if *update {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v: run make manifests", err)
		}
		if string(got) != want {
			t.Errorf("deploy/manifests/%s is not the chart's rendering: run make manifests", m.file)
		}
		// Only the uninstall file holds the hook.
		for _, obj := range decodeAll(t, string(got)) {
			hook := obj.(metav1.Object).GetAnnotations()["helm.sh/hook"] != ""
			if hook != (m.file == "pier-uninstall.yaml") {
				t.Errorf("%s: %s has hook annotation %v", m.file, key(obj), hook)
			}
		}
	}
}
