{{/* Chart name, truncated to 63 characters. */}}
{{- define "slm-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, with the chart name unless it already contains it. */}}
{{- define "slm-gateway.fullname" -}}
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

{{- define "slm-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slm-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slm-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "slm-gateway.labels" -}}
helm.sh/chart: {{ include "slm-gateway.chart" . }}
{{ include "slm-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slm-gateway
{{- end }}

{{- define "slm-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "slm-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "slm-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Name of the Secret the chart creates (upstream key, API keys, Redis URL). */}}
{{- define "slm-gateway.secretName" -}}
{{- include "slm-gateway.fullname" . }}
{{- end }}

{{/* Name of the Secret holding the upstream key, or "" when there is none. */}}
{{- define "slm-gateway.upstreamKeySecret" -}}
{{- if .Values.upstream.existingSecret }}
{{- .Values.upstream.existingSecret }}
{{- else if .Values.upstream.apiKey }}
{{- include "slm-gateway.secretName" . }}
{{- end }}
{{- end }}

{{- define "slm-gateway.upstreamKeySecretKey" -}}
{{- if .Values.upstream.existingSecret }}
{{- .Values.upstream.existingSecretKey }}
{{- else }}
{{- "upstream-api-key" }}
{{- end }}
{{- end }}

{{/* True ("true") when the chart's own Secret has at least one entry. */}}
{{- define "slm-gateway.ownSecretNeeded" -}}
{{- if or (and .Values.upstream.apiKey (not .Values.upstream.existingSecret)) (and .Values.auth.apiKeys (not .Values.auth.existingSecret)) (and .Values.redis.url (not .Values.redis.existingSecret)) }}
{{- "true" }}
{{- end }}
{{- end }}

{{- define "slm-gateway.redisName" -}}
{{- printf "%s-redis" (include "slm-gateway.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slm-gateway.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "slm-gateway.name" . }}-redis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Path of the model file inside the container, or "" when the gateway assembles the bundled model itself. */}}
{{- define "slm-gateway.modelPath" -}}
{{- $m := .Values.model }}
{{- if eq $m.source "image" }}
{{- $m.image.path }}
{{- else if or (eq $m.source "existingClaim") (eq $m.source "volume") }}
{{- printf "%s/%s" (trimSuffix "/" $m.mountPath) $m.file }}
{{- end }}
{{- end }}

{{/* Fail early on combinations the schema cannot express. */}}
{{- define "slm-gateway.validate" -}}
{{- if and .Values.redis.enabled (or .Values.redis.url .Values.redis.existingSecret) }}
{{- fail "redis: set either redis.enabled (in-chart Redis) or redis.url / redis.existingSecret (external Redis), not both" }}
{{- end }}
{{- if and .Values.redis.tls.existingSecret (not (or .Values.redis.url .Values.redis.existingSecret)) }}
{{- fail "redis.tls.existingSecret is for an external Redis over rediss://: set redis.url or redis.existingSecret (the in-chart Redis has no TLS)" }}
{{- end }}
{{- if has (trimSuffix "/" .Values.redis.tls.mountPath) (list "/etc/slm-gateway" "/tmp" (trimSuffix "/" .Values.model.cacheDir) (trimSuffix "/" .Values.model.mountPath)) }}
{{- fail "redis.tls.mountPath must not be a path the chart already mounts (/etc/slm-gateway, /tmp, model.cacheDir, model.mountPath)" }}
{{- end }}
{{- if and (eq .Values.model.source "existingClaim") (not .Values.model.existingClaim) }}
{{- fail "model.source is existingClaim: set model.existingClaim to the name of the PersistentVolumeClaim holding the model" }}
{{- end }}
{{- if and (eq .Values.model.source "volume") (not .Values.model.volume) }}
{{- fail "model.source is volume: set model.volume to a volume source (e.g. nfs, csi, ephemeral)" }}
{{- end }}
{{- if hasKey .Values.model.volume "hostPath" }}
{{- fail "model.volume: hostPath volumes are not supported; use a PersistentVolumeClaim (model.existingClaim) or another volume source" }}
{{- end }}
{{- if and .Values.policy.content .Values.policy.path }}
{{- fail "policy: set either policy.content or policy.path, not both" }}
{{- end }}
{{- if and .Values.upstream.apiKey .Values.upstream.existingSecret }}
{{- fail "upstream: set either upstream.apiKey or upstream.existingSecret, not both" }}
{{- end }}
{{- if and .Values.auth.apiKeys .Values.auth.existingSecret }}
{{- fail "auth: set either auth.apiKeys or auth.existingSecret, not both" }}
{{- end }}
{{- if and (or .Values.upstream.apiKey .Values.upstream.existingSecret) (not .Values.upstream.url) }}
{{- fail "upstream: an upstream key is set but upstream.url is empty" }}
{{- end }}
{{- end }}

{{/* The gateway's config.yaml. */}}
{{- define "slm-gateway.configYaml" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $_ := set $cfg "host" "0.0.0.0" }}
{{- $_ := set $cfg "port" (int .Values.containerPort) }}
{{- if .Values.policy.content }}
{{- $_ := set $cfg "policy" "/etc/slm-gateway/policy.yaml" }}
{{- else if .Values.policy.path }}
{{- $_ := set $cfg "policy" .Values.policy.path }}
{{- end }}
{{- $up := default dict $cfg.upstream }}
{{- if .Values.upstream.url }}
{{- $_ := set $up "url" .Values.upstream.url }}
{{- end }}
{{- $_ := set $cfg "upstream" $up }}
{{- if .Values.slmServer.enabled }}
{{- $s := .Values.slmServer }}
{{- $tiers := default dict $cfg.slm_tiers }}
{{- $url := printf "http://%s-slm:%v/v1" (include "slm-gateway.fullname" .) $s.port }}
{{- $_ := set $tiers $s.name (dict "url" $url "model_name" $s.modelName "features" $s.features) }}
{{- $_ := set $cfg "slm_tiers" $tiers }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{- define "slm-gateway.policyYaml" -}}
{{- if kindIs "string" .Values.policy.content }}
{{- .Values.policy.content }}
{{- else }}
{{- toYaml .Values.policy.content }}
{{- end }}
{{- end }}
