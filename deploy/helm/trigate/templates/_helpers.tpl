{{/* Names and labels shared by every object of the release. */}}

{{- define "trigate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trigate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "trigate.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "trigate.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "trigate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trigate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "trigate.labels" -}}
{{ include "trigate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: trigate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "trigate.serviceAccountName" -}}
{{- default (include "trigate.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "trigate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the node CA (tls.crt, tls.key). */}}
{{- define "trigate.caSecretName" -}}
{{- default (printf "%s-ca" (include "trigate.fullname" .)) .Values.ca.secretName }}
{{- end }}

{{/* The public admin port, taken from config.admin.public_address so the
     probes, the Service and the config cannot disagree. */}}
{{- define "trigate.publicPort" -}}
{{- $addr := required "config.admin.public_address is needed: the probes and Prometheus use it" .Values.config.admin.public_address }}
{{- last (splitList ":" $addr) }}
{{- end }}
