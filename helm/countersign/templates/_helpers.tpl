{{/* Names and labels. */}}
{{- define "countersign.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "countersign.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "countersign.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "countersign.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "countersign.selectorLabels" -}}
app.kubernetes.io/name: {{ include "countersign.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "countersign.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "countersign.secretName" -}}
{{- .Values.secrets.existingSecret | default (include "countersign.fullname" .) -}}
{{- end -}}

{{- define "countersign.configMapName" -}}
{{- .Values.config.existingConfigMap | default (printf "%s-config" (include "countersign.fullname" .)) -}}
{{- end -}}

{{- define "countersign.policiesConfigMapName" -}}
{{- .Values.policies.existingConfigMap | default (printf "%s-policies" (include "countersign.fullname" .)) -}}
{{- end -}}

{{- define "countersign.reviewerEnv" -}}
{{- printf "COUNTERSIGN_REVIEWER_%s" (. | upper | replace "-" "_") -}}
{{- end -}}

{{/* The countersign.yaml the chart generates (SPEC section 8). */}}
{{- define "countersign.configYaml" -}}
listen: 0.0.0.0:{{ .Values.proxy.port }}
admin:
  listen: 0.0.0.0:{{ .Values.admin.port }}
  {{- if or .Values.secrets.existingSecret .Values.secrets.create.adminToken }}
  token_env: COUNTERSIGN_ADMIN_TOKEN
  {{- end }}
  {{- with .Values.admin.publicUrl }}
  public_url: {{ . | quote }}
  {{- end }}
routes:
{{- toYaml .Values.config.routes | nindent 2 }}
policy:
  dir: /etc/countersign/policies
  entrypoint: {{ .Values.config.policy.entrypoint }}
  input: {{ .Values.config.policy.input }}
  timeout: {{ .Values.config.policy.timeout }}
capture:
{{- toYaml .Values.config.capture | nindent 2 }}
hold:
{{- toYaml .Values.config.hold | nindent 2 }}
{{- if .Values.config.reviewers }}
reviewers:
{{- range $name, $r := .Values.config.reviewers }}
  {{ $name }}:
    key_env: {{ include "countersign.reviewerEnv" $name }}
    groups: {{ toJson (($r | default dict).groups | default list) }}
{{- end }}
{{- else }}
reviewers: {}
{{- end }}
{{- if .Values.config.notify }}
notify:
{{- range $i, $n := .Values.config.notify }}
  - url: {{ $n.url | quote }}
    secret_env: COUNTERSIGN_NOTIFY_{{ $i }}
{{- end }}
{{- else }}
notify: []
{{- end }}
audit:
  store: "sqlite:///var/lib/countersign/audit.db"
log:
{{- toYaml .Values.config.log | nindent 2 }}
{{- end -}}

{{/* Environment: every secret comes from the Secret, never the ConfigMap. */}}
{{- define "countersign.env" -}}
{{- $secret := include "countersign.secretName" . -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.create.adminToken }}
- name: COUNTERSIGN_ADMIN_TOKEN
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: admin-token } }
{{- end }}
{{- range $name, $r := .Values.config.reviewers }}
- name: {{ include "countersign.reviewerEnv" $name }}
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: {{ printf "reviewer-%s" $name }} } }
{{- end }}
{{- range $i, $n := .Values.config.notify }}
- name: COUNTERSIGN_NOTIFY_{{ $i }}
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: {{ printf "notify-%d" $i }} } }
{{- end }}
{{- range $env, $key := .Values.secrets.extraEnvFromSecret }}
- name: {{ $env }}
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: {{ $key }} } }
{{- end }}
{{- end -}}

{{/* The countersign container, shared by gateway and sidecar modes. */}}
{{- define "countersign.container" -}}
name: countersign
image: {{ include "countersign.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: ["serve", "--config", "/etc/countersign/config/countersign.yaml"]
ports:
  - { name: proxy, containerPort: {{ .Values.proxy.port }}, protocol: TCP }
  - { name: admin, containerPort: {{ .Values.admin.port }}, protocol: TCP }
{{- $env := include "countersign.env" . }}
{{- if $env }}
env:
{{- $env | nindent 2 }}
{{- end }}
volumeMounts:
  - { name: countersign-config, mountPath: /etc/countersign/config, readOnly: true }
  - { name: countersign-policies, mountPath: /etc/countersign/policies, readOnly: true }
  - { name: countersign-data, mountPath: /var/lib/countersign }
startupProbe:
  httpGet: { path: /healthz, port: admin }
  periodSeconds: 1
  failureThreshold: 30
livenessProbe:
  httpGet: { path: /healthz, port: admin }
  periodSeconds: 10
readinessProbe:
  httpGet: { path: /readyz, port: admin }
  periodSeconds: 5
resources:
{{- toYaml .Values.resources | nindent 2 }}
securityContext:
{{- toYaml .Values.securityContext | nindent 2 }}
{{- end -}}

{{/*
countersign as a native sidecar: an init container with restartPolicy
Always, so it starts (and is ready) before the agent and outlives it.
Use it in an agent's pod spec:
  initContainers:
    {{- include "countersign.sidecar" . | nindent 4 }}
  volumes:
    {{- include "countersign.volumes" . | nindent 4 }}
and point the agent's API base URL at http://127.0.0.1:<proxy.port>.
*/}}
{{- define "countersign.sidecar" -}}
- restartPolicy: Always
{{- include "countersign.container" . | nindent 2 }}
{{- end -}}

{{- define "countersign.volumes" -}}
- name: countersign-config
  configMap: { name: {{ include "countersign.configMapName" . }} }
- name: countersign-policies
  configMap: { name: {{ include "countersign.policiesConfigMapName" . }} }
- name: countersign-data
{{- if eq .Values.persistence.type "pvc" }}
  persistentVolumeClaim: { claimName: {{ .Values.persistence.existingClaim | default (printf "%s-data" (include "countersign.fullname" .)) }} }
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}
