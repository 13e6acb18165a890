package installer

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestAPICluster(t *testing.T) {
	ctx := context.Background()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{"kubernetes.io/os": "linux"}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "other", Effect: corev1.TaintEffectNoExecute}}},
		Status: corev1.NodeStatus{
			NodeInfo:        corev1.NodeSystemInfo{ContainerRuntimeVersion: "pier://0.1.0"},
			RuntimeHandlers: []corev1.NodeRuntimeHandler{{Name: "runc"}, {Name: "crun"}},
			Conditions:      []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	cs := fake.NewClientset(node)
	c := apiCluster{c: API{Core: cs.CoreV1(), Apps: cs.AppsV1()}}
	get := func() *corev1.Node {
		n, err := cs.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for range 2 { // idempotent
		if err := c.SetTaint(ctx, "node-1", true); err != nil {
			t.Fatal(err)
		}
		if err := c.SetLabel(ctx, "node-1", LabelInstalled, "true"); err != nil {
			t.Fatal(err)
		}
	}
	n := get()
	if len(n.Spec.Taints) != 2 || n.Spec.Taints[1].Key != TaintSwitching || n.Spec.Taints[1].Effect != corev1.TaintEffectNoSchedule || n.Labels[LabelInstalled] != "true" || n.Labels["kubernetes.io/os"] != "linux" {
		t.Errorf("taints %v, labels %v", n.Spec.Taints, n.Labels)
	}
	v, hs, ready, err := c.Runtime(ctx, "node-1")
	if err != nil || v != "pier://0.1.0" || strings.Join(hs, ",") != "runc,crun" || !ready {
		t.Errorf("Runtime = %q %v %v %v", v, hs, ready, err)
	}
	for range 2 {
		if err := c.SetTaint(ctx, "node-1", false); err != nil {
			t.Fatal(err)
		}
		if err := c.SetLabel(ctx, "node-1", LabelInstalled, ""); err != nil {
			t.Fatal(err)
		}
	}
	n = get()
	if len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != "other" || n.Labels[LabelInstalled] != "" || n.Labels["kubernetes.io/os"] != "linux" {
		t.Errorf("after: taints %v, labels %v", n.Spec.Taints, n.Labels)
	}
}

const uninstallDS = `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: pier-uninstall
  namespace: kube-system
spec:
  selector:
    matchLabels: {app: pier-uninstall}
  template:
    metadata:
      labels: {app: pier-uninstall}
    spec:
      containers:
      - name: uninstall
        image: pier:test
        args: [uninstall, --wait]
`

func TestUninstallCluster(t *testing.T) {
	labelled := func(name string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelInstalled: "true"}}}
	}
	cs := fake.NewClientset(labelled("a"), labelled("b"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Each node's uninstaller removes the label once the DaemonSet runs.
	go func() {
		for _, n := range []string{"a", "b"} {
			for {
				if _, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, "pier-uninstall", metav1.GetOptions{}); err == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			(apiCluster{c: API{Core: cs.CoreV1(), Apps: cs.AppsV1()}}).SetLabel(ctx, n, LabelInstalled, "")
		}
	}()
	if err := UninstallCluster(ctx, API{Core: cs.CoreV1(), Apps: cs.AppsV1()}, []byte(uninstallDS), "", 20*time.Millisecond, t.Logf); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().DaemonSets("kube-system").Get(ctx, "pier-uninstall", metav1.GetOptions{}); err == nil {
		t.Error("the uninstall DaemonSet was left")
	}
	// A node that never finishes: a timeout naming it, the DaemonSet left
	// to finish.
	cs = fake.NewClientset(labelled("stuck"))
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	err := UninstallCluster(ctx2, API{Core: cs.CoreV1(), Apps: cs.AppsV1()}, []byte(uninstallDS), "", 20*time.Millisecond, t.Logf)
	if err == nil || !strings.Contains(err.Error(), "stuck") {
		t.Errorf("err = %v, want one naming the node", err)
	}
	if _, err := cs.AppsV1().DaemonSets("kube-system").Get(context.Background(), "pier-uninstall", metav1.GetOptions{}); err != nil {
		t.Errorf("the DaemonSet of an unfinished uninstall: %v", err)
	}
}
