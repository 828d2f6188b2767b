{{/* The release's name for objects: "turnpike" for a release named turnpike, else <release>-turnpike. */}}
{{- define "turnpike.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 53 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 53 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "turnpike.selectorLabels" -}}
app.kubernetes.io/name: turnpike
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "turnpike.labels" -}}
{{ include "turnpike.selectorLabels" . }}
app.kubernetes.io/part-of: turnpike
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "turnpike.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Relays run the operator's own image unless relayImage says otherwise. */}}
{{- define "turnpike.relayImage" -}}
{{- .Values.relayImage | default (include "turnpike.image" .) -}}
{{- end -}}

{{- define "turnpike.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (printf "%s-operator" (include "turnpike.fullname" .)) -}}
{{- end -}}
