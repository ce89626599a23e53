{{/* Chart name, overridable. */}}
{{- define "canary-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Name of every namespaced object, the Lease and the cluster-scoped RBAC objects. The release name
alone when it already contains the chart's name, so `helm install canary-operator` does not
produce canary-operator-canary-operator.
*/}}
{{- define "canary-operator.fullname" -}}
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

{{- define "canary-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator's pods; never change between upgrades. */}}
{{- define "canary-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "canary-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "canary-operator.labels" -}}
helm.sh/chart: {{ include "canary-operator.chart" . }}
{{ include "canary-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: canary-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
What the operator does to each kind, and nothing else (tests/install.rs proves both that it is
enough and that every verb is used). Shared by the ClusterRole and the per-namespace Roles, so
both modes grant the same.
- CanaryReleases: a cache (list, watch; one list with limit=1 at start to check the CRD), and
  status written through the status subresource (patch). Never get, update or delete.
- Children: cached (list, watch; the cache also tells "absent" from "someone else's object", so
  there is no get); server-side apply (patch); and create, because the API server also
  authorizes `create` when a server-side apply creates the object.
- delete only for the kinds the operator prunes: HPAs when autoscaling is turned off, the
  ConfigMap and Deployment of a renamed version, a Gateway no longer created; the routes
  (Gateway, VirtualService, HTTPRoute) of a release whose hosts an older claim overlaps
  (HostConflict: its route is withheld); with the Gateway API provider, a renamed version's
  Service; with both providers, the DestinationRule of a release that moved to the Gateway API.
  Otherwise the Service and DestinationRule exist once per release, under the release's name,
  and go only with the release itself (owner references; the garbage collector deletes them).
- Only the kinds of the providers in trafficProviders (istio: networking.istio.io; gatewayAPI:
  gateway.networking.k8s.io).
- Events: created, one recorder per Event (a recorder's series would need patch).
- Secrets: none. Deployments reference the release's Secret in envFrom; the kubelet reads it.
*/}}
{{- define "canary-operator.rules" -}}
- apiGroups: ["canary.dev"]
  resources: ["canaryreleases"]
  verbs: ["list", "watch"]
- apiGroups: ["canary.dev"]
  resources: ["canaryreleases/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
{{- $providers := uniq .Values.trafficProviders }}
{{- $switch := gt (len $providers) 1 }}
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch"{{ if has "gatewayAPI" $providers }}, "delete"{{ end }}]
{{- if has "istio" $providers }}
- apiGroups: ["networking.istio.io"]
  resources: ["destinationrules"]
  verbs: ["list", "watch", "create", "patch"{{ if $switch }}, "delete"{{ end }}]
- apiGroups: ["networking.istio.io"]
  resources: ["gateways", "virtualservices"]
  verbs: ["list", "watch", "create", "patch", "delete"]
{{- end }}
{{- if has "gatewayAPI" $providers }}
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["list", "watch", "create", "patch", "delete"]
{{- end }}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{- /*
Only when watching every namespace: pod metadata, listed cluster-wide with a Gateway's selector,
to tell whether any pod is an ingress gateway Istio would program for it (gateway pods live in a
namespace of their own, which an install limited to some namespaces does not watch nor check).
*/}}
{{- define "canary-operator.clusterRules" -}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end }}
