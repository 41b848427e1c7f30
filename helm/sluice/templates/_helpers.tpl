{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release + chart, unless the release name already holds the chart name. */}}
{{- define "sluice.fullname" -}}
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

{{/* Name of a component's objects: <fullname>-gateway, <fullname>-ingest. Args: (list $ "gateway"). */}}
{{- define "sluice.componentName" -}}
{{- $root := index . 0 }}{{- $component := index . 1 -}}
{{- printf "%s-%s" (include "sluice.fullname" $root | trunc 55 | trimSuffix "-") $component }}
{{- end }}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end }}

{{/* Labels of a component's objects. Args: (list $ "gateway"). */}}
{{- define "sluice.componentLabels" -}}
{{- $root := index . 0 }}{{- $component := index . 1 -}}
{{ include "sluice.labels" $root }}
app.kubernetes.io/component: {{ $component }}
{{- end }}

{{/* Selector labels of a component: stable across upgrades. Args: (list $ "gateway"). */}}
{{- define "sluice.selectorLabels" -}}
{{- $root := index . 0 }}{{- $component := index . 1 -}}
app.kubernetes.io/name: {{ include "sluice.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ $component }}
{{- end }}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference of a component. Args: the component's values, the root. */}}
{{- define "sluice.image" -}}
{{- $c := index . 0 }}{{ $root := index . 1 }}
{{- printf "%s:%s" $c.image.repository (default $root.Chart.AppVersion $c.image.tag) }}
{{- end }}

{{/* The existing Secret holding a component's Kafka credentials file, or "". Args: (list $ "gateway"). */}}
{{- define "sluice.credentialsSecret" -}}
{{- $root := index . 0 }}{{ $c := index $root.Values (index . 1) }}
{{- default $root.Values.kafka.credentials.existingSecret $c.credentialsSecret }}
{{- end }}

{{/*
SLUICE_KAFKA_CONFIG of a component: kafka.config merged with the component's kafkaConfig, plus
the locations of mounted TLS files; entries joined with ";". Args: (list $ "gateway").
*/}}
{{- define "sluice.kafkaConfig" -}}
{{- $root := index . 0 }}{{ $c := index $root.Values (index . 1) }}
{{- $props := merge (dict) (deepCopy $c.kafkaConfig) (deepCopy $root.Values.kafka.config) }}
{{- with $root.Values.kafka.tls }}
{{- if .existingSecret }}
{{- if .caKey }}{{ $_ := set $props "ssl.ca.location" "/etc/sluice/kafka-tls/ca.crt" }}{{ end }}
{{- if .certKey }}{{ $_ := set $props "ssl.certificate.location" "/etc/sluice/kafka-tls/tls.crt" }}{{ end }}
{{- if .keyKey }}{{ $_ := set $props "ssl.key.location" "/etc/sluice/kafka-tls/tls.key" }}{{ end }}
{{- end }}
{{- end }}
{{- $entries := list }}
{{- range $k, $v := $props }}
{{- if contains ";" (toString $v) }}
{{- fail (printf "kafka config %s: values must not contain ';' (the SLUICE_KAFKA_CONFIG separator)" $k) }}
{{- end }}
{{- $entries = append $entries (printf "%s=%v" $k $v) }}
{{- end }}
{{- join ";" $entries }}
{{- end }}

{{/* Kafka-related volumes of a component. Args: (list $ "gateway"). */}}
{{- define "sluice.kafkaVolumes" -}}
{{- $root := index . 0 }}
{{- $secret := include "sluice.credentialsSecret" . -}}
{{- if $secret }}
- name: kafka-credentials
  secret:
    secretName: {{ $secret }}
    defaultMode: 0440
    items:
      - key: {{ $root.Values.kafka.credentials.key }}
        path: credentials.properties
{{- end }}
{{- with $root.Values.kafka.tls }}
{{- if .existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .existingSecret }}
    defaultMode: 0440
    items:
      {{- if .caKey }}
      - key: {{ .caKey }}
        path: ca.crt
      {{- end }}
      {{- if .certKey }}
      - key: {{ .certKey }}
        path: tls.crt
      {{- end }}
      {{- if .keyKey }}
      - key: {{ .keyKey }}
        path: tls.key
      {{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "sluice.kafkaVolumeMounts" -}}
{{- $root := index . 0 -}}
{{- if include "sluice.credentialsSecret" . }}
- name: kafka-credentials
  mountPath: /etc/sluice/kafka
  readOnly: true
{{- end }}
{{- if $root.Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/sluice/kafka-tls
  readOnly: true
{{- end }}
{{- end }}

{{/*
The settings both components share, as ConfigMap data (SLUICE_* environment variables).
Args: (list $ "gateway").
*/}}
{{- define "sluice.commonConfig" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}{{- $c := index $root.Values $component -}}
SLUICE_LISTEN: {{ printf "0.0.0.0:%d" (int $c.httpPort) | quote }}
SLUICE_ADMIN_LISTEN: {{ printf "0.0.0.0:%d" (int $c.adminPort) | quote }}
SLUICE_KAFKA_BROKERS: {{ required "kafka.brokers is required" $root.Values.kafka.brokers | quote }}
{{- with include "sluice.kafkaConfig" . }}
SLUICE_KAFKA_CONFIG: {{ . | quote }}
{{- end }}
{{- if include "sluice.credentialsSecret" . }}
SLUICE_KAFKA_CONFIG_FILE: "/etc/sluice/kafka/credentials.properties"
{{- end }}
{{- with $root.Values.kafka.topicPrefix }}
SLUICE_TOPIC_PREFIX: {{ . | quote }}
{{- end }}
SLUICE_STREAMS: {{ $root.Values.kafka.streams | quote }}
SLUICE_WORKERS: {{ $c.workers | quote }}
SLUICE_LOG_FORMAT: {{ $root.Values.log.format | quote }}
SLUICE_LOG: {{ $root.Values.log.level | quote }}
{{- with $root.Values.tracing }}
{{- if .endpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ .endpoint | quote }}
OTEL_EXPORTER_OTLP_PROTOCOL: {{ .protocol | quote }}
OTEL_TRACES_SAMPLER: {{ .sampler | quote }}
OTEL_TRACES_SAMPLER_ARG: {{ .samplerArg | quote }}
{{- with .resourceAttributes }}
OTEL_RESOURCE_ATTRIBUTES: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{ include "sluice.authConfig" $root }}
{{- range $k, $v := $c.extraConfig }}
{{- if not (hasPrefix "SLUICE_" $k) }}
{{- fail (printf "%s.extraConfig: %s is not a SLUICE_* variable" $component $k) }}
{{- end }}
{{ $k }}: {{ $v | toString | quote }}
{{- end }}
{{- end }}

{{/* Gateway terminationGracePeriodSeconds: computed, or the value given if it is long enough. */}}
{{- define "sluice.gateway.terminationGrace" -}}
{{- $g := .Values.gateway }}
{{- $min := add (int $g.preStopSleepSeconds) (int $g.drainWindowSeconds) 2 }}
{{- if kindIs "invalid" $g.terminationGracePeriodSeconds }}
{{- add $min (int $g.terminationGraceMarginSeconds) }}
{{- else if le (int $g.terminationGracePeriodSeconds) $min }}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%d) must be above preStopSleepSeconds + drainWindowSeconds + 2 = %d, or the drain is cut short by SIGKILL" (int $g.terminationGracePeriodSeconds) $min) }}
{{- else }}
{{- int $g.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Ingest terminationGracePeriodSeconds: preStop + in-flight requests + producer flush + margin. */}}
{{- define "sluice.ingest.terminationGrace" -}}
{{- $i := .Values.ingest }}
{{- $min := add (int $i.preStopSleepSeconds) (mul 2 (int $i.shutdownTimeoutSeconds)) }}
{{- if kindIs "invalid" $i.terminationGracePeriodSeconds }}
{{- add $min (int $i.terminationGraceMarginSeconds) }}
{{- else if le (int $i.terminationGracePeriodSeconds) $min }}
{{- fail (printf "ingest.terminationGracePeriodSeconds (%d) must be above preStopSleepSeconds + 2 × shutdownTimeoutSeconds = %d, or in-flight requests and the producer flush are cut short" (int $i.terminationGracePeriodSeconds) $min) }}
{{- else }}
{{- int $i.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Access-control settings both components share, as ConfigMap data. Refuses to render an open
deployment: a key source, or `auth.allowAnonymous: true` on purpose. Args: $.
*/}}
{{- define "sluice.authConfig" -}}
{{- $a := .Values.auth }}
{{- if and $a.publicKeys.existingSecret (not $a.publicKeys.keys) }}
{{- fail "auth.publicKeys.existingSecret is set but auth.publicKeys.keys lists no key of it" }}
{{- end }}
{{- if not (or $a.allowAnonymous $a.jwksUrl $a.hmacSecret.existingSecret $a.publicKeys.existingSecret) }}
{{- fail "auth: no token key is configured (auth.jwksUrl, auth.hmacSecret.existingSecret or auth.publicKeys.existingSecret); set one, or auth.allowAnonymous: true to run Sluice without access control on purpose" }}
{{- end }}
{{- if $a.allowAnonymous }}
SLUICE_ALLOW_ANONYMOUS: "true"
{{- end }}
{{- with $a.jwksUrl }}
SLUICE_JWKS_URL: {{ . | quote }}
{{- end }}
{{- with $a.issuer }}
SLUICE_JWT_ISSUER: {{ . | quote }}
{{- end }}
{{- with $a.audience }}
SLUICE_JWT_AUDIENCE: {{ . | quote }}
{{- end }}
SLUICE_JWT_LEEWAY: {{ $a.leeway | quote }}
{{- if $a.hmacSecret.existingSecret }}
SLUICE_JWT_HMAC_SECRET_FILE: "/etc/sluice/auth/hmac/secret"
{{- end }}
{{- if $a.publicKeys.existingSecret }}
{{- $files := list }}
{{- range $a.publicKeys.keys }}{{ $files = append $files (printf "/etc/sluice/auth/keys/%s" .) }}{{ end }}
SLUICE_JWT_PUBLIC_KEY_FILE: {{ join "," $files | quote }}
{{- end }}
{{- end }}

{{/* Volumes of the token keys (both components). Args: $. */}}
{{- define "sluice.authVolumes" -}}
{{- $a := .Values.auth }}
{{- if $a.hmacSecret.existingSecret }}
- name: jwt-hmac
  secret:
    secretName: {{ $a.hmacSecret.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ $a.hmacSecret.key }}
        path: secret
{{- end }}
{{- if $a.publicKeys.existingSecret }}
- name: jwt-public-keys
  secret:
    secretName: {{ $a.publicKeys.existingSecret }}
    defaultMode: 0444
    items:
      {{- range $a.publicKeys.keys }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}
{{- end }}

{{- define "sluice.authVolumeMounts" -}}
{{- $a := .Values.auth }}
{{- if $a.hmacSecret.existingSecret }}
- name: jwt-hmac
  mountPath: /etc/sluice/auth/hmac
  readOnly: true
{{- end }}
{{- if $a.publicKeys.existingSecret }}
- name: jwt-public-keys
  mountPath: /etc/sluice/auth/keys
  readOnly: true
{{- end }}
{{- end }}
