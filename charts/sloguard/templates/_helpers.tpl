{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "sloguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "sloguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sloguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "sloguard.labels" -}}
helm.sh/chart: {{ include "sloguard.chart" . }}
{{ include "sloguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sloguard
{{- end }}

{{/* Selector labels of the operator pod; never change them on upgrade (selectors are immutable). */}}
{{- define "sloguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sloguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "sloguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sloguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sloguard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The sidecar image of pools that pin none: sidecar.image, else the operator's own image (same tag). */}}
{{- define "sloguard.sidecarImage" -}}
{{- default (include "sloguard.image" .) .Values.sidecar.image }}
{{- end }}

{{/* Permissions on pools and their children: cluster-wide or per watched namespace (see rbac.yaml). */}}
{{- define "sloguard.poolRules" -}}
# Pools: watched (event handlers only, so no finalizer). kopf removes the finalizer an older operator
# added (patch).
- apiGroups: ["sloguard.dev"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch", "patch"]
# The autoscaler writes desired replicas (spec.replicas) only through the /scale subresource.
- apiGroups: ["sloguard.dev"]
  resources: ["inferencepools/scale"]
  verbs: ["get", "patch"]
# Pool status: conditions, replicas, selector, the autoscaler's per-pod cap bounds. Never the spec.
- apiGroups: ["sloguard.dev"]
  resources: ["inferencepools/status"]
  verbs: ["get", "patch"]
# Owned children: written by server-side apply (patch; create for older clusters), removed with
# their pool by the garbage collector (delete kept for an explicit cleanup). Drift is found by reading
# the named children on every resync.
# ConfigMap (sidecar configuration) and the two Services (ClusterIP: grpc, http, metrics ports;
# <pool>-headless: grpc, http for client-side balancing) of each pool.
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "create", "patch", "delete"]
# The Deployment running vLLM beside the sidecar; watched (our label only) so that a pool's Ready
# follows its replicas without waiting for the resync.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The PodDisruptionBudget (at most one pod of a pool evicted at a time).
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch", "delete"]
# Events about pools: warnings on failed reconciles (kopf), ScaledUp/ScaledDown and
# MetricsUnavailable/MetricsAvailable (the autoscaler).
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
# Drain-aware scale-down: list a pool's pods and set controller.kubernetes.io/pod-deletion-cost on the
# least-loaded ones (metadata only) so the ReplicaSet removes those. No create, delete or eviction.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "patch"]
# Prometheus credentials of autoscaled pools (spec.autoscaling.prometheus: CA bundle, bearer token,
# basic auth), read by name in the pool's namespace. get only: no list or watch of Secrets.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
