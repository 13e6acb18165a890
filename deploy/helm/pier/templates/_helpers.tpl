{{/*
pier.name is the chart's name, or nameOverride.
*/}}
{{- define "pier.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
pier.fullname is the name the release's objects share: fullnameOverride, or
the release name followed by the chart's name unless it contains it. It is
kept short enough for the suffix "-uninstall" and a DaemonSet pod's suffix.
*/}}
{{- define "pier.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
pier.chart is the chart's name and version, for the helm.sh/chart label.
*/}}
{{- define "pier.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
pier.selectorLabels are the labels a workload selects its pods by; the
component (installer, uninstaller, uninstall-job) follows them.
*/}}
{{- define "pier.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pier.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
pier.labels are the labels of every object.
*/}}
{{- define "pier.labels" -}}
helm.sh/chart: {{ include "pier.chart" . }}
{{ include "pier.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pier
{{- end }}

{{/*
pier.image is the image reference: by digest when one is given, else by tag
(the chart's appVersion by default).
*/}}
{{- define "pier.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/*
pier.installerFlags are the flags install, uninstall and status share.
*/}}
{{- define "pier.installerFlags" -}}
- --host-root=/host
- --config-dir=/etc/pier-install/config.d
{{- if .Values.kubelet.switch }}
- --switch-kubelet
{{- end }}
- {{ printf "--kubelet-config=%s" .Values.kubelet.configPath | quote }}
- {{ printf "--kubelet-flags=%s" .Values.kubelet.flagsPath | quote }}
- {{ printf "--kubelet-unit=%s" .Values.kubelet.unit | quote }}
{{- range .Values.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
pier.podTemplate is the pod template of the installer DaemonSet and of the
uninstall DaemonSet (dict: root, the chart's context; command, "install" or
"uninstall"; component; serviceAccount). Only the installer has a readiness
probe (pier-install status), and only for it must the config ConfigMap exist:
on uninstall the chart's objects are gone.
*/}}
{{- define "pier.podTemplate" -}}
{{- $root := .root }}
{{- $install := eq .command "install" -}}
metadata:
  labels:
    {{- include "pier.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  {{- if or $install $root.Values.podAnnotations }}
  annotations:
    {{- if $install }}
    # Rolls the installer when its configuration changes.
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- end }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  serviceAccountName: {{ .serviceAccount }}
  hostNetwork: true
  hostPID: false
  dnsPolicy: ClusterFirstWithHostNet
  {{- with $root.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ if $install }}installer{{ else }}uninstaller{{ end }}
      image: {{ include "pier.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      args:
        - {{ .command }}
        - --wait
        - {{ printf "--timeout=%s" $root.Values.installer.timeout | quote }}
        {{- include "pier.installerFlags" $root | nindent 8 }}
      env:
        - name: NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
      securityContext:
        privileged: true
        runAsUser: 0
        runAsGroup: 0
      {{- if $install }}
      readinessProbe:
        exec:
          command:
            - /usr/local/bin/pier-install
            - status
            {{- include "pier.installerFlags" $root | nindent 12 }}
        periodSeconds: 10
        timeoutSeconds: 10
        failureThreshold: 3
      {{- end }}
      {{- with $root.Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: host-root
          mountPath: /host
          mountPropagation: HostToContainer
        - name: config
          mountPath: /etc/pier-install/config.d
          readOnly: true
  volumes:
    - name: host-root
      hostPath:
        path: /
        type: Directory
    - name: config
      configMap:
        name: {{ include "pier.fullname" $root }}-config
        {{- if not $install }}
        optional: true
        {{- end }}
  {{- with $root.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/*
pier.daemonSet is a DaemonSet of the pier image (dict as pier.podTemplate,
plus name).
*/}}
{{- define "pier.daemonSet" -}}
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ .name }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "pier.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  selector:
    matchLabels:
      {{- include "pier.selectorLabels" .root | nindent 6 }}
      app.kubernetes.io/component: {{ .component }}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  template:
    {{- include "pier.podTemplate" . | nindent 4 }}
{{- end }}

{{/*
pier.config is the pier configuration drop-in the values ask for, as TOML:
the convenience values, then config merged over them.
*/}}
{{- define "pier.config" -}}
{{- $c := dict }}
{{- with .Values.cgroupDriver }}{{ $_ := set $c "cgroup_driver" . }}{{ end }}
{{- with .Values.defaultRuntime }}{{ $_ := set $c "default_runtime" . }}{{ end }}
{{- if .Values.metrics.enabled }}
{{- $_ := set $c "metrics" (dict "address" .Values.metrics.address) }}
{{- end }}
{{- if .Values.mirrors }}
{{- $r := dict }}
{{- range $host, $urls := .Values.mirrors }}
{{- $_ := set $r $host (dict "mirrors" $urls) }}
{{- end }}
{{- $_ := set $c "registries" $r }}
{{- end }}
{{- if .Values.handlers }}
{{- $h := dict }}
{{- range $name, $handler := .Values.handlers }}
{{- $_ := set $h $name (pick $handler "path" "allowed_annotations") }}
{{- end }}
{{- $_ := set $c "runtimes" $h }}
{{- end }}
{{- $c = mustMergeOverwrite $c (deepCopy .Values.config) }}
{{- include "pier.integers" $c }}
{{- toToml $c }}
{{- end }}

{{/*
pier.integers turns the whole numbers of a map and of its nested maps (in
place; not those in lists, where pier has no numbers) into integers: values
files decode every number as a float, which toToml would write as 2.0, and
pier's integer keys reject that.
*/}}
{{- define "pier.integers" -}}
{{- range $k, $v := . }}
{{- if kindIs "float64" $v }}
{{- if eq $v (floor $v) }}{{ $_ := set $ $k (int64 $v) }}{{ end }}
{{- else if kindIs "map" $v }}
{{- include "pier.integers" $v }}
{{- end }}
{{- end }}
{{- end }}

{{/*
pier.hookAnnotations makes an object part of the post-delete hook, created
in the order of its weight (the argument) and deleted once the hook
succeeded, or before the next uninstall's hook recreates it.
*/}}
{{- define "pier.hookAnnotations" -}}
helm.sh/hook: post-delete
helm.sh/hook-weight: {{ . | quote }}
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}
