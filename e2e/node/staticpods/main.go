// Command staticpods turns pier's rendered Helm chart into static pods for
// the node VM's standalone kubelet (e2e/node, the deploy phase), which has
// no API server: the installer DaemonSet's pod template becomes
// install.yaml, the uninstall DaemonSet of the chart's post-delete hook
// becomes uninstall.yaml. ConfigMap volumes, which a static pod cannot
// use, become hostPath volumes of a directory written with the ConfigMap's
// files (under -configmaps, at the path -vm-configmaps gives in the VM);
// the service account goes (there is no API server to issue its token).
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

func main() {
	rendered := flag.String("rendered", "", "the output of helm template")
	out := flag.String("out", "", "directory for install.yaml, uninstall.yaml and configmaps/")
	vmDir := flag.String("vm-configmaps", "/etc/pier-e2e/configmaps", "where configmaps/ is in the VM")
	flag.Parse()
	if err := run(*rendered, *out, *vmDir); err != nil {
		log.Fatal(err)
	}
}

func run(rendered, out, vmDir string) error {
	f, err := os.Open(rendered)
	if err != nil {
		return err
	}
	defer f.Close()
	objs, err := decodeAll(f)
	if err != nil {
		return err
	}
	var install, uninstall *appsv1.DaemonSet
	cms := map[string]*corev1.ConfigMap{}
	for _, o := range objs {
		switch x := o.(type) {
		case *appsv1.DaemonSet:
			install = x
		case *corev1.ConfigMap:
			cms[x.Name] = x
			for _, v := range x.Data {
				inner, err := decodeAll(bytes.NewReader([]byte(v)))
				if err != nil {
					continue
				}
				for _, obj := range inner {
					if ds, ok := obj.(*appsv1.DaemonSet); ok {
						uninstall = ds
					}
				}
			}
		}
	}
	if install == nil || uninstall == nil {
		return fmt.Errorf("%s: want the installer DaemonSet and a ConfigMap holding the uninstall DaemonSet", rendered)
	}
	for file, ds := range map[string]*appsv1.DaemonSet{"install.yaml": install, "uninstall.yaml": uninstall} {
		pod, err := staticPod(ds, cms, filepath.Join(out, "configmaps"), vmDir)
		if err != nil {
			return err
		}
		b, err := yaml.Marshal(pod)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, file), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func decodeAll(r io.Reader) ([]runtime.Object, error) {
	var objs []runtime.Object
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	for {
		doc, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 || bytes.Equal(bytes.TrimSpace(doc), []byte("---")) {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			// Comments only, or a kind the scheme lacks.
			continue
		}
		objs = append(objs, obj)
	}
}

func staticPod(ds *appsv1.DaemonSet, cms map[string]*corev1.ConfigMap, cmDir, vmDir string) (*corev1.Pod, error) {
	ns := ds.Namespace
	if ns == "" {
		ns = "kube-system"
	}
	spec := *ds.Spec.Template.Spec.DeepCopy()
	spec.ServiceAccountName, spec.DeprecatedServiceAccount = "", ""
	no := false
	spec.AutomountServiceAccountToken = &no
	for i, v := range spec.Volumes {
		if v.ConfigMap == nil {
			continue
		}
		cm, ok := cms[v.ConfigMap.Name]
		if !ok {
			return nil, fmt.Errorf("volume %s: ConfigMap %s is not in the chart", v.Name, v.ConfigMap.Name)
		}
		if err := os.MkdirAll(filepath.Join(cmDir, cm.Name), 0o755); err != nil {
			return nil, err
		}
		for k, data := range cm.Data {
			if err := os.WriteFile(filepath.Join(cmDir, cm.Name, k), []byte(data), 0o644); err != nil {
				return nil, err
			}
		}
		dir := corev1.HostPathDirectory
		spec.Volumes[i].VolumeSource = corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: filepath.Join(vmDir, cm.Name), Type: &dir}}
	}
	meta := *ds.Spec.Template.ObjectMeta.DeepCopy()
	meta.Name, meta.Namespace = ds.Name, ns
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: meta,
		Spec:       spec,
	}, nil
}
