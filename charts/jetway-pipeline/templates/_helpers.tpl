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

{{/* Span export over OTLP, when tracing.otlpEndpoint names a receiver. */}}
{{- define "pipeline.tracingEnv" -}}
{{- with .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ $.Values.tracing.sampleRatio | quote }}
{{- end }}
{{- end -}}
