{{/*
Chart name, overridable; cut to the 63 characters a label value allows.
*/}}
{{- define "siphon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's resources. The release name alone when it already
contains the chart name ("siphon", "siphon-prod"), else "<release>-<name>".
*/}}
{{- define "siphon.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "siphon.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the pod. Never change them: a Deployment's selector is
immutable.
*/}}
{{- define "siphon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "siphon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "siphon.labels" -}}
helm.sh/chart: {{ include "siphon.chart" . }}
{{ include "siphon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: siphon
{{- end }}

{{/*
The ServiceAccount the pod runs as.
*/}}
{{- define "siphon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "siphon.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: repository:tag, or repository@digest when a digest is set.
*/}}
{{- define "siphon.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The connector files' ConfigMap body. The Deployment hashes exactly this text
into its checksum/config annotation, so any change rolls the pod.
*/}}
{{- define "siphon.connectorsData" -}}
{{- $files := dict }}
{{- range $name, $toml := .Values.connectors }}
{{- $_ := set $files (printf "%s.toml" $name) (toString $toml) }}
{{- end }}
{{- if $files }}
{{- toYaml $files }}
{{- end }}
{{- end }}

{{/*
Checks of combinations the schema cannot express.
*/}}
{{- define "siphon.validate" -}}
{{- if lt (mul (int .Values.terminationGracePeriodSeconds) 1000) (add (int .Values.shutdownGraceMs) 5000) }}
{{- fail (printf "terminationGracePeriodSeconds (%v s) must exceed shutdownGraceMs (%v ms) by at least 5 s, or Kubernetes kills siphon before its graceful shutdown ends; raise terminationGracePeriodSeconds to at least %d" .Values.terminationGracePeriodSeconds .Values.shutdownGraceMs (add (div (add (int .Values.shutdownGraceMs) 999) 1000) 5)) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled: a ServiceMonitor scrapes through the Service" }}
{{- end }}
{{- if and .Values.control.enabled (not .Values.control.token.secretName) }}
{{- fail "control.enabled needs control.token.secretName: the Secret holding the control endpoint's bearer token" }}
{{- end }}
{{- if and (or .Values.existingSecret.env .Values.existingSecret.files.enabled) (not .Values.existingSecret.name) }}
{{- fail "existingSecret.env and existingSecret.files need existingSecret.name: the Secret to take them from" }}
{{- end }}
{{- end }}
