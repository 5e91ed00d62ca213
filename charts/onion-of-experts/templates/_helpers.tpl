{{/* Names and labels shared by every template. */}}
{{- define "onion.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "onion.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "onion.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "onion.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "onion.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "onion.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
What the operator does in each namespace it manages (operator/onion_operator/kube.py, leader.py,
handlers.py): read Onions and write their status; server-side apply and delete the children
(Deployments, Services, ConfigMaps, ServiceAccounts, PVCs, demand Leases, the router's Role and
RoleBinding); watch Leases, Deployments, Services and ConfigMaps; post Events. It can create the router's Role without
`escalate`/`bind` because it holds every permission that Role grants.
*/}}
{{- define "onion.rules" -}}
- apiGroups: [onion.dev]
  resources: [onions]
  verbs: [get, list, watch]
- apiGroups: [onion.dev]
  resources: [onions/status]
  verbs: [get, patch, update]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [apps]
  resources: [daemonsets]  # coldStart.prePullImages
  verbs: [get, list, create, update, patch, delete]
- apiGroups: [batch]
  resources: [jobs]  # coldStart.prefetchWeights
  verbs: [get, list, create, update, patch, delete]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [serviceaccounts, persistentvolumeclaims]
  verbs: [get, list, create, update, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, create, update, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, create, update, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/*
kopf's observers list and watch CRDs and namespaces cluster-wide even when it watches only some
namespaces (it retries and logs 403s without them). Read-only; nothing else is cluster-wide.
*/}}
{{- define "onion.discoveryRules" -}}
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end -}}

{{- define "onion.clusterRoleName" -}}
{{- printf "%s-%s" .Release.Namespace (include "onion.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
