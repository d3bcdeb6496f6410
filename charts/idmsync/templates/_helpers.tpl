{{/* Names and labels shared by the templates. */}}

{{- define "idmsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "idmsync.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "idmsync.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "idmsync.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "idmsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "idmsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "idmsync.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "idmsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: idmsync
{{- end }}

{{- define "idmsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "idmsync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "idmsync.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Rules for the resources idmsync serves; namespaced in a Role, or cluster-wide. */}}
{{- define "idmsync.namespacedRules" -}}
# The resource it serves: watch, record progress (annotations, finalizers) and status.
- apiGroups: [idmsync.dev]
  resources: [synctokenresets]
  verbs: [get, list, watch, patch]
- apiGroups: [idmsync.dev]
  resources: [synctokenresets/status]
  verbs: [get, patch, update]
# Events mirroring each step.
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# Credentials and in-cluster targets, read on demand: get only, never list or watch.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [""]
  resources: [services]
  verbs: [get]
{{- end }}
