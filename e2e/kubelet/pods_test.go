package kubelet

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The static pods of TestKubelet: each function returns one manifest.

// idle waits for SIGTERM, which ends it at once (exit 0): a shell that is
// PID 1 would otherwise ignore it until the grace period ends.
const idle = `trap 'exit 0' TERM; while :; do sleep 1; done`

// ctr is a busybox container that runs script with sh -c.
func ctr(name, script string) corev1.Container {
	return corev1.Container{
		Name: name, Image: reg.Ref(busyboxImg), ImagePullPolicy: corev1.PullIfNotPresent,
		Command: []string{"sh", "-c", script},
	}
}

// newPod is a pod of containers with a 2 s grace period.
func newPod(name string, containers ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.PodSpec{Containers: containers, TerminationGracePeriodSeconds: ptr.To[int64](2)},
	}
}

func emptyDir(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
}

func mount(volume, path string) corev1.VolumeMount {
	return corev1.VolumeMount{Name: volume, MountPath: path}
}

// resources builds requirements from "name=quantity" pairs.
func resources(pairs ...string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for i := 0; i+1 < len(pairs); i += 2 {
		l[corev1.ResourceName(pairs[i])] = resource.MustParse(pairs[i+1])
	}
	return l
}

// orderPod has an init container, a sidecar (an init container that keeps
// running) and two app containers, which each append their name to
// /data/order as they start.
func orderPod() *corev1.Pod {
	setup := ctr("setup", `echo setup >> /data/order; sleep 1`)
	sidecar := ctr("sidecar", `echo sidecar >> /data/order; `+idle)
	sidecar.RestartPolicy = ptr.To(corev1.ContainerRestartPolicyAlways)
	sidecar.StartupProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"grep", "-q", "sidecar", "/data/order"}}},
		PeriodSeconds: 1, FailureThreshold: 30,
	}
	p := newPod("order",
		ctr("app1", `echo app1 >> /data/order; `+idle),
		ctr("app2", `echo app2 >> /data/order; `+idle))
	p.Spec.InitContainers = []corev1.Container{setup, sidecar}
	p.Spec.Volumes = []corev1.Volume{emptyDir("data")}
	for _, list := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range list {
			list[i].VolumeMounts = []corev1.VolumeMount{mount("data", "/data")}
		}
	}
	return p
}

// volumesPod shares an emptyDir between two containers and mounts a host
// file read-only; its reader container writes what it sees (arguments,
// working directory, environment, /etc/hosts, resolv.conf, hostname, the
// host file) into the out volume, for the test to read on the host.
func volumesPod(hostFile string) *corev1.Pod {
	writer := ctr("writer", `echo "hello from writer" > /shared/msg.tmp && mv /shared/msg.tmp /shared/msg; `+idle)
	writer.VolumeMounts = []corev1.VolumeMount{mount("shared", "/shared")}
	reader := corev1.Container{
		Name: "reader", Image: reg.Ref(busyboxImg), ImagePullPolicy: corev1.PullIfNotPresent,
		Command: []string{"sh", "-c"},
		Args: []string{`printf '%s\n' "$0" "$@" > /out/args
pwd > /out/pwd
env > /out/env
cat /etc/resolv.conf > /out/resolv.conf
cat /etc/hosts > /out/hosts
hostname > /out/hostname
cat /hostfile > /out/hostfile
if echo more >> /hostfile 2>/dev/null; then echo writable; else echo read-only; fi > /out/hostfile-write
until [ -f /shared/msg ]; do sleep 0.2; done
cat /shared/msg > /out/shared
touch /out/done
` + idle, "zero", "one two", "three"},
		WorkingDir: "/work/dir",
		Env: []corev1.EnvVar{
			{Name: "GREETING", Value: "hello world"},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "MEM_LIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}},
		},
		Resources: corev1.ResourceRequirements{Limits: resources("memory", "48Mi")},
		VolumeMounts: []corev1.VolumeMount{
			mount("shared", "/shared"), mount("out", "/out"),
			{Name: "hostfile", MountPath: "/hostfile", ReadOnly: true},
		},
	}
	p := newPod("volumes", writer, reader)
	p.Spec.HostAliases = []corev1.HostAlias{{IP: "127.1.2.3", Hostnames: []string{"alias.e2e.test", "alias2.e2e.test"}}}
	p.Spec.DNSPolicy = corev1.DNSClusterFirst
	p.Spec.Volumes = []corev1.Volume{emptyDir("shared"), emptyDir("out"), {Name: "hostfile", VolumeSource: corev1.VolumeSource{
		HostPath: &corev1.HostPathVolumeSource{Path: hostFile, Type: ptr.To(corev1.HostPathFile)}}}}
	return p
}

func httpProbe(path string, port int) corev1.ProbeHandler {
	return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstrFrom(port)}}
}

func tcpProbe(port int) corev1.ProbeHandler {
	return corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstrFrom(port)}}
}

func execProbe(cmd ...string) corev1.ProbeHandler {
	return corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: cmd}}
}

// probe is a probe that runs every second.
func probe(h corev1.ProbeHandler, failureThreshold int32) *corev1.Probe {
	return &corev1.Probe{ProbeHandler: h, PeriodSeconds: 1, TimeoutSeconds: 2, FailureThreshold: failureThreshold}
}

// serve starts busybox httpd on port (serving /www, where each of files is
// "ok") and a TCP server on tcpPort.
func serve(httpPort, tcpPort int, files ...string) string {
	s := "mkdir -p /www; "
	for _, f := range files {
		s += "echo ok > /www/" + f + "; "
	}
	return s + "httpd -f -p " + itoa(httpPort) + " -h /www & nc -ll -p " + itoa(tcpPort) + " -e true & "
}

// probesPod has containers whose startup, readiness and liveness probes
// (exec, HTTP, TCP) pass, and one whose readiness probe always fails.
func probesPod() *corev1.Pod {
	web := ctr("http", serve(8080, 8081, "healthz")+`touch /tmp/alive; `+idle)
	web.StartupProbe = probe(httpProbe("/healthz", 8080), 30)
	web.ReadinessProbe = probe(tcpProbe(8081), 3)
	web.LivenessProbe = probe(execProbe("test", "-f", "/tmp/alive"), 3)
	tcp := ctr("tcp", serve(8090, 8091, "ready")+idle)
	tcp.StartupProbe = probe(tcpProbe(8091), 30)
	tcp.ReadinessProbe = probe(httpProbe("/ready", 8090), 3)
	tcp.LivenessProbe = probe(tcpProbe(8091), 3)
	execC := ctr("exec", `touch /tmp/ready; `+idle)
	// Its liveness probe asks the http container's server: it starts once
	// that server answers.
	execC.StartupProbe = probe(execProbe("wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/healthz"), 30)
	execC.ReadinessProbe = probe(execProbe("cat", "/tmp/ready"), 3)
	execC.LivenessProbe = probe(httpProbe("/healthz", 8080), 3)
	unready := ctr("unready", idle)
	unready.ReadinessProbe = probe(execProbe("false"), 1)
	return newPod("probes", web, tcp, execC, unready)
}

// livenessPod has containers whose exec, HTTP and TCP liveness probes
// start failing three seconds after they start.
func livenessPod() *corev1.Pod {
	execC := ctr("exec", `touch /tmp/alive; (sleep 3; rm /tmp/alive) & `+idle)
	execC.LivenessProbe = probe(execProbe("test", "-f", "/tmp/alive"), 2)
	web := ctr("http", serve(8180, 8181, "healthz")+`(sleep 3; rm /www/healthz) & `+idle)
	web.LivenessProbe = probe(httpProbe("/healthz", 8180), 2)
	tcp := ctr("tcp", `nc -ll -p 8191 -e true & nc=$!; (sleep 3; kill $nc) & `+idle)
	tcp.LivenessProbe = probe(tcpProbe(8191), 2)
	return newPod("liveness", execC, web, tcp)
}

// resourcesPod has a container with requests and limits for CPU, memory,
// ephemeral storage and 2 MiB huge pages.
func resourcesPod() *corev1.Pod {
	c := ctr("limited", idle)
	c.Resources = corev1.ResourceRequirements{
		Requests: resources("cpu", "250m", "memory", "32Mi", "ephemeral-storage", "16Mi", "hugepages-2Mi", "4Mi"),
		Limits:   resources("cpu", "500m", "memory", "64Mi", "ephemeral-storage", "64Mi", "hugepages-2Mi", "4Mi"),
	}
	return newPod("resources", c)
}

// ephemeralPod writes 24 MiB into its container's root file system, past
// its 8 MiB ephemeral storage limit.
func ephemeralPod() *corev1.Pod {
	c := ctr("hog", `dd if=/dev/zero of=/hog bs=1M count=24 2>/dev/null; sync; `+idle)
	c.Resources = corev1.ResourceRequirements{
		Requests: resources("ephemeral-storage", "4Mi"),
		Limits:   resources("ephemeral-storage", "8Mi"),
	}
	return newPod("ephemeral", c)
}

// oomPod allocates past its 32 MiB memory limit; it is never restarted.
func oomPod() *corev1.Pod {
	c := ctr("hog", `echo allocating; dd if=/dev/zero of=/dev/null bs=128M count=1; tail /dev/zero`)
	c.Resources = corev1.ResourceRequirements{Limits: resources("memory", "32Mi")}
	p := newPod("oom", c)
	p.Spec.RestartPolicy = corev1.RestartPolicyNever
	return p
}

// restrictedPod meets the Pod Security Standards' restricted profile; it
// writes its identity and process status into the out volume.
func restrictedPod() *corev1.Pod {
	c := ctr("restricted", `id > /out/id
grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status > /out/status
cat /proc/self/attr/current > /out/apparmor 2>/dev/null
if touch /rootfs-write-test 2>/dev/null; then echo writable; else echo read-only; fi > /out/rootfs
touch /out/done
`+idle)
	c.VolumeMounts = []corev1.VolumeMount{mount("out", "/out")}
	c.SecurityContext = &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
	}
	p := newPod("restricted", c)
	p.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To[int64](1000),
		RunAsGroup:     ptr.To[int64](1000),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	p.Spec.Volumes = []corev1.Volume{emptyDir("out")}
	return p
}

// neverPod (restartPolicy Never) has containers that exit with codes and
// termination messages of each kind.
func neverPod() *corev1.Pod {
	ok := ctr("ok", `echo "all done" > /dev/termination-log; exit 0`)
	custom := ctr("custom", `echo "custom message" > /tmp/custom-msg; exit 7`)
	custom.TerminationMessagePath = "/tmp/custom-msg"
	fallback := ctr("fallback", `echo "first words"; echo "last words"; exit 2`)
	fallback.TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	fallbackOK := ctr("fallback-ok", `echo "not a message"; exit 0`)
	fallbackOK.TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	p := newPod("never", ok, custom, fallback, fallbackOK)
	p.Spec.RestartPolicy = corev1.RestartPolicyNever
	return p
}

// onFailurePod (restartPolicy OnFailure) has a container that fails once
// and then succeeds, and one that succeeds at once.
func onFailurePod() *corev1.Pod {
	flaky := ctr("flaky", `if [ -f /data/ran ]; then echo second run; exit 0; fi; touch /data/ran; echo first run; exit 3`)
	flaky.VolumeMounts = []corev1.VolumeMount{mount("data", "/data")}
	p := newPod("onfailure", flaky, ctr("once", `exit 0`))
	p.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	p.Spec.Volumes = []corev1.Volume{emptyDir("data")}
	return p
}

// killPod's container has its process killed by the test.
// killPod's victim has its process killed, its orphan its shim monitor.
func killPod() *corev1.Pod { return newPod("kill", ctr("victim", idle), ctr("orphan", idle)) }

// deleteGrace is deletePod's grace period.
const deleteGrace = 4

// deletePod has a container that exits on SIGTERM and one that ignores it,
// with a 4 s grace period.
func deletePod() *corev1.Pod {
	p := newPod("delete", ctr("term", idle), ctr("stubborn", `trap '' TERM; while :; do sleep 1; done`))
	p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](deleteGrace)
	return p
}

// chattyLines is how many numbered lines the chatty pod writes.
const chattyLines = 1500

// chattyPod writes chattyLines numbered lines of about 100 bytes, 100 a
// second, then "end".
func chattyPod() *corev1.Pod {
	return newPod("chatty", ctr("chatty", `i=1
while [ $i -le `+itoa(chattyLines)+` ]; do
	printf 'line %06d abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n' $i
	if [ $((i % 10)) -eq 0 ]; then sleep 0.1; fi
	i=$((i+1))
done
echo end
`+idle))
}

func intstrFrom(port int) intstr.IntOrString { return intstr.FromInt32(int32(port)) }

func itoa(i int) string { return strconv.Itoa(i) }
