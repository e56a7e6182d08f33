{{/* Chart name, possibly overridden. */}}
{{- define "cc.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name. Kept at most 52 characters: StatefulSet pod names add "-<ordinal>" and the
controller-revision-hash label adds "-<hash>" (63 characters at most).
*/}}
{{- define "cc.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cc.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cc.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cc.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cc.labels" -}}
helm.sh/chart: {{ include "cc.chart" . }}
{{ include "cc.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: campaign-connector
{{- end }}

{{- define "cc.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cc.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "cc.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "cc.headlessServiceName" -}}
{{- printf "%s-headless" (include "cc.fullname" .) }}
{{- end }}

{{- define "cc.metricsServiceName" -}}
{{- printf "%s-metrics" (include "cc.fullname" .) }}
{{- end }}

{{- define "cc.adminSecretName" -}}
{{- default (printf "%s-admin" (include "cc.fullname" .)) .Values.adminToken.existingSecret }}
{{- end }}

{{/* PromQL label matchers that select this release's series. */}}
{{- define "cc.promSelector" -}}
{{- if .Values.prometheusRule.selector }}
{{- .Values.prometheusRule.selector }}
{{- else }}
{{- printf "namespace=%q,job=%q" .Release.Namespace (include "cc.metricsServiceName" .) }}
{{- end }}
{{- end }}

{{/*
A scalar as text. Helm reads numbers in values files as float64, which print as 1e+06;
integral ones are printed as integers.
*/}}
{{- define "cc.scalar" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
connector.yaml: the `config` values, with every librdkafka property as a string (the
connector reads `kafka` as a map of strings).
*/}}
{{- define "cc.connectorYaml" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $kafka := dict }}
{{- range $k, $v := (.Values.config.kafka | default dict) }}
{{- $_ := set $kafka $k (include "cc.scalar" $v) }}
{{- end }}
{{- $_ := set $cfg "kafka" $kafka }}
{{- toYaml $cfg }}
{{- end }}

{{/* Fails rendering on values that would deploy a broken connector. */}}
{{- define "cc.validate" -}}
{{- if lt (int .Values.terminationGracePeriodSeconds) 60 }}
{{- fail "terminationGracePeriodSeconds must be at least 60: shutdown commits the open transaction and leaves the group" }}
{{- end }}
{{- if hasKey .Values.config "instance_id" }}
{{- fail "config.instance_id must not be set: every pod gets its own from CONNECTOR_INSTANCE_ID (its pod name)" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- $partitions := int (.Values.config.partitions | default 6) }}
{{- if gt (int .Values.autoscaling.maxReplicaCount) $partitions }}
{{- fail (printf "autoscaling.maxReplicaCount (%d) must not exceed config.partitions (%d): instances beyond the partition count own no task; grow the partitions first with `campaign-connector partitions expand` (docs/operations.md)" (int .Values.autoscaling.maxReplicaCount) $partitions) }}
{{- end }}
{{- if lt (int .Values.autoscaling.maxReplicaCount) (int .Values.autoscaling.minReplicaCount) }}
{{- fail "autoscaling.maxReplicaCount must be at least autoscaling.minReplicaCount" }}
{{- end }}
{{- end }}
{{- range $k, $_ := .Values.configEnv }}
{{- if or (eq (upper $k) "INSTANCE_ID") (eq (upper $k) "HTTP_LISTEN") (eq (upper $k) "ADMIN_TOKEN") }}
{{- fail (printf "configEnv.%s: CONNECTOR_%s is set by the chart" $k (upper $k)) }}
{{- end }}
{{- end }}
{{- end }}
