{{- define "pipeline.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "pipeline.connection" -}}
{{- with .Values.connectionRef }}
  connectionRef:
    name: {{ . }}
{{- end }}
{{- end -}}

{{- define "pipeline.labels" -}}
app.kubernetes.io/part-of: jetway-pipeline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
