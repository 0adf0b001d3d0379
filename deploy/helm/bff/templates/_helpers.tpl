{{/* The release's resource name: <release>-bff, or fullnameOverride; 63 characters at most (DNS label). */}}
{{- define "bff.fullname" -}}
{{- default (printf "%s-%s" .Release.Name .Chart.Name) .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "bff.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bff.labels" -}}
{{ include "bff.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The grace Kubernetes gives a terminating pod: preStop, bff's drain and shutdown, and a margin. */}}
{{- define "bff.terminationGracePeriodSeconds" -}}
{{- $s := .Values.shutdown -}}
{{- add $s.preStopSleepSeconds $s.drainDelaySeconds $s.timeoutSeconds $s.marginSeconds -}}
{{- end -}}

{{/* One TOML value: JSON strings, numbers, booleans and arrays of them are TOML too; a map is an inline table. */}}
{{- define "bff.tomlValue" -}}
{{- if kindIs "map" . -}}
{ {{- range $i, $key := keys . | sortAlpha }}{{ if $i }},{{ end }} {{ toJson $key }} = {{ include "bff.tomlValue" (get $ $key) }}{{ end }} }
{{- else -}}
{{ toJson . }}
{{- end -}}
{{- end -}}

{{/* The keys of one TOML table, one per line. */}}
{{- define "bff.tomlKeys" -}}
{{- range $key, $value := . }}
{{ $key }} = {{ include "bff.tomlValue" $value }}
{{- end -}}
{{- end -}}

{{/* bff.toml: the config values with the keys the chart owns; [[routes]] and [[frontends]] last, as arrays of
tables (an entry's keys, then its [frontends.oidc] and [frontends.frontend], then its [[frontends.routes]]). */}}
{{- define "bff.toml" -}}
{{- $config := .Values.config -}}
{{- $server := $config.server | default dict -}}
{{- range $key := list "listen" "drain_delay" "shutdown_timeout" -}}
{{- if hasKey $server $key -}}
{{- fail (printf "config.server.%s is set by the chart (containerPort, shutdown.*): remove it" $key) -}}
{{- end -}}
{{- end -}}
{{- if hasKey $config "metrics" -}}
{{- fail "config.metrics is set by the chart: use metrics.enabled and metrics.port" -}}
{{- end -}}
# Rendered by the bff Helm chart from its values. Secrets are only references to variables filled from Secrets.
[server]
listen = {{ printf "0.0.0.0:%d" (int .Values.containerPort) | toJson }}
drain_delay = {{ printf "%ds" (int .Values.shutdown.drainDelaySeconds) | toJson }}
shutdown_timeout = {{ printf "%ds" (int .Values.shutdown.timeoutSeconds) | toJson }}
{{- include "bff.tomlKeys" $server }}

[session]
{{- $session := required "config.session is required (at least keys)" $config.session }}
{{- if .Values.redis.secretName }}
{{- if hasKey $session "store" }}
{{- fail "config.session.store and redis.secretName are both set: the store comes from the Secret" }}
{{- end }}
store = "${BFF_SESSION__STORE}"
{{- end }}
{{- include "bff.tomlKeys" $session }}
{{- if .Values.metrics.enabled }}

[metrics]
listen = {{ printf "0.0.0.0:%d" (int .Values.metrics.port) | toJson }}
{{- end }}
{{- if $config.frontends }}
{{- range $key := list "oidc" "routes" "frontend" }}
{{- if hasKey $config $key }}
{{- fail (printf "config.%s is per frontend with config.frontends: move it into each entry and set config.%s: null" $key $key) }}
{{- end }}
{{- end }}
{{- if hasKey $server "public_origin" }}
{{- fail "config.server.public_origin is per frontend with config.frontends: set it in each entry and config.server.public_origin: null" }}
{{- end }}
{{- end }}
{{- range $name, $table := $config }}
{{- if not (has $name (list "server" "session" "routes" "frontends")) }}

[{{ $name }}]
{{- include "bff.tomlKeys" $table }}
{{- end }}
{{- end }}
{{- range $route := $config.routes }}

[[routes]]
{{- include "bff.tomlKeys" $route }}
{{- end }}
{{- range $entry := $config.frontends }}

[[frontends]]
{{- range $key, $value := $entry }}
{{- if not (has $key (list "oidc" "routes" "frontend")) }}
{{ $key }} = {{ include "bff.tomlValue" $value }}
{{- end }}
{{- end }}
{{- range $table := list "oidc" "frontend" }}
{{- with get $entry $table }}

[frontends.{{ $table }}]
{{- include "bff.tomlKeys" . }}
{{- end }}
{{- end }}
{{- range $route := $entry.routes }}

[[frontends.routes]]
{{- include "bff.tomlKeys" $route }}
{{- end }}
{{- end }}
{{ end -}}
