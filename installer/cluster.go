package installer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	appsv1client "k8s.io/client-go/kubernetes/typed/apps/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
)

// The node's labels: pier is installed (uninstall-cluster waits for none
// to have it); the kubelet runs its pods on pier (LabelRuntime=pier, what
// the chart's RuntimeClasses select). Its taint while the kubelet moves.
const (
	LabelInstalled = "pier-runtime.github.io/installed"
	LabelRuntime   = "pier-runtime.github.io/runtime"
	TaintSwitching = "pier-runtime.github.io/switching"
)

// Cluster is what the installer asks of the API server about its node.
type Cluster interface {
	SetTaint(ctx context.Context, node string, on bool) error
	// SetLabel sets the node's label key to value, or removes it when
	// value is "".
	SetLabel(ctx context.Context, node, key, value string) error
	// Runtime returns what the node reports: its runtime's version
	// ("pier://0.1.0"), its runtime handlers, and whether it is Ready.
	Runtime(ctx context.Context, node string) (version string, handlers []string, ready bool, err error)
}

// API is the part of the API server the installer uses: nodes, and
// DaemonSets for uninstall-cluster. Only these typed clients are linked
// in, not the clientset of every API group (which made pier-install
// 49 MiB).
type API struct {
	Core corev1client.CoreV1Interface
	Apps appsv1client.AppsV1Interface
}

type apiCluster struct{ c API }

// NewCluster returns the API server of the pod's cluster, or nil when the
// installer does not run in a cluster's pod (a kubelet in standalone mode,
// static pods): then nothing is labelled or tainted, and the kubelet's
// health stands for the node's status.
func NewCluster() (Cluster, error) {
	if os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return nil, nil
	}
	c, err := Clientset()
	if err != nil {
		return nil, err
	}
	return apiCluster{c: c}, nil
}

// Clientset is the API server of the pod's cluster, with the pod's
// service account.
func Clientset() (API, error) {
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return API{}, fmt.Errorf("not in a cluster's pod: %w", err)
	}
	core, err := corev1client.NewForConfig(cfg)
	if err != nil {
		return API{}, err
	}
	apps, err := appsv1client.NewForConfig(cfg)
	if err != nil {
		return API{}, err
	}
	return API{Core: core, Apps: apps}, nil
}

func (a apiCluster) SetTaint(ctx context.Context, node string, on bool) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := a.c.Core.Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		i := slices.IndexFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == TaintSwitching })
		switch {
		case on && i < 0:
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: TaintSwitching, Value: "true", Effect: corev1.TaintEffectNoSchedule})
		case !on && i >= 0:
			n.Spec.Taints = slices.Delete(n.Spec.Taints, i, i+1)
		default:
			return nil
		}
		_, err = a.c.Core.Nodes().Update(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

func (a apiCluster) SetLabel(ctx context.Context, node, key, value string) error {
	var v any = value
	if value == "" {
		v = nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{key: v}}})
	_, err := a.c.Core.Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

func (a apiCluster) Runtime(ctx context.Context, node string) (string, []string, bool, error) {
	n, err := a.c.Core.Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return "", nil, false, err
	}
	var hs []string
	for _, h := range n.Status.RuntimeHandlers {
		hs = append(hs, h.Name)
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	return n.Status.NodeInfo.ContainerRuntimeVersion, hs, ready, nil
}

// UninstallCluster is the Helm chart's post-delete Job: it creates the
// uninstall DaemonSet from manifest, waits until no node carries
// LabelInstalled (each node's uninstaller removes it when done), then
// deletes the DaemonSet.
func UninstallCluster(ctx context.Context, c API, manifest []byte, namespace string, poll time.Duration, log func(string, ...any)) error {
	sch := runtime.NewScheme()
	if err := appsv1.AddToScheme(sch); err != nil {
		return err
	}
	obj, _, err := serializer.NewCodecFactory(sch).UniversalDeserializer().Decode(manifest, nil, nil)
	if err != nil {
		return fmt.Errorf("the uninstall DaemonSet: %w", err)
	}
	ds, ok := obj.(*appsv1.DaemonSet)
	if !ok {
		return fmt.Errorf("the uninstall manifest is a %T, not a DaemonSet", obj)
	}
	if namespace == "" {
		namespace = ds.Namespace
	}
	dsc := c.Apps.DaemonSets(namespace)
	if _, err := dsc.Create(ctx, ds, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create the uninstall DaemonSet: %w", err)
	}
	log("created DaemonSet %s/%s: waiting until no node has the label %s", namespace, ds.Name, LabelInstalled)
	var left []string
	for {
		nodes, err := c.Core.Nodes().List(ctx, metav1.ListOptions{LabelSelector: LabelInstalled})
		if err == nil {
			left = left[:0]
			for _, n := range nodes.Items {
				left = append(left, n.Name)
			}
			if len(left) == 0 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pier is still installed on %s: see the logs of the %s pods there (the DaemonSet is left to finish)", strings.Join(left, ", "), ds.Name)
		case <-time.After(poll):
		}
	}
	log("pier is uninstalled from every node: deleting DaemonSet %s", ds.Name)
	if err := dsc.Delete(ctx, ds.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}
