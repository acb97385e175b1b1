{{/* Chart name. */}}
{{- define "lumenore-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "lumenore-operator.fullname" -}}
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

{{- define "lumenore-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels (stable across upgrades). */}}
{{- define "lumenore-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lumenore-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels. */}}
{{- define "lumenore-operator.labels" -}}
helm.sh/chart: {{ include "lumenore-operator.chart" . }}
{{ include "lumenore-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lumenore
{{- end }}

{{- define "lumenore-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lumenore-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference from {registry, repository, tag, digest}; global.imageRegistry replaces the
registry; a digest replaces the tag; the tag defaults to the chart's appVersion.
Usage: include "lumenore-operator.image" (dict "image" .Values.image "root" .)
*/}}
{{- define "lumenore-operator.image" -}}
{{- $img := .image -}}
{{- $registry := default $img.registry .root.Values.global.imageRegistry -}}
{{- $repo := $img.repository -}}
{{- if $registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" $registry) $repo }}{{ end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end }}

{{/* Pull secrets: global first, then the chart's, without duplicates. */}}
{{- define "lumenore-operator.imagePullSecrets" -}}
{{- $names := list -}}
{{- range (concat .Values.global.imagePullSecrets .Values.imagePullSecrets) -}}
{{- $n := . -}}
{{- if kindIs "map" . }}{{ $n = .name }}{{ end -}}
{{- $names = append $names $n -}}
{{- end -}}
{{- range uniq $names }}
- name: {{ . }}
{{- end }}
{{- end }}

{{/* Namespaces watched, as a list: explicit, or [] (all) for cluster scope, or [release ns]. */}}
{{- define "lumenore-operator.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- uniq .Values.watchNamespaces | toJson -}}
{{- else if eq .Values.rbac.scope "namespace" -}}
{{- list .Release.Namespace | toJson -}}
{{- else -}}
{{- list | toJson -}}
{{- end -}}
{{- end }}

{{/* "true" when leader election is on. */}}
{{- define "lumenore-operator.leaderElect" -}}
{{- $le := .Values.leaderElection.enabled -}}
{{- if kindIs "bool" $le -}}
{{- $le -}}
{{- else -}}
{{- gt (int .Values.replicaCount) 1 -}}
{{- end -}}
{{- end }}

{{- define "lumenore-operator.leaseName" -}}
{{- default (printf "%s-leader" (include "lumenore-operator.fullname" .)) .Values.leaderElection.leaseName -}}
{{- end }}

{{/* metadata of the rendered CRD: name, keep policy, labels. */}}
{{- define "lumenore-operator.crdMetadata" -}}
metadata:
  name: lumenoreconnectors.lumenore.io
  annotations:
    {{- if .Values.crds.keep }}
    # Never deleted by helm uninstall or an upgrade that stops rendering it: deleting the CRD
    # deletes every LumenoreConnector.
    helm.sh/resource-policy: keep
    # The same for Argo CD, which does not read Helm's annotation.
    argocd.argoproj.io/sync-options: Delete=false
    {{- end }}
    lumenore.io/chart-version: {{ .Chart.Version | quote }}
  labels:
    {{- include "lumenore-operator.labels" . | nindent 4 }}
{{ end }}

{{/* Labels of tenant objects (no app.kubernetes.io/name: they are not the operator). */}}
{{- define "lumenore-operator.tenantLabels" -}}
helm.sh/chart: {{ include "lumenore-operator.chart" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lumenore
{{- end }}
