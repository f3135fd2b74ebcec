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

{{/* The Secret holding the PostgreSQL password. */}}
{{- define "countersign.postgresSecretName" -}}
{{- .Values.store.postgres.existingSecret | default (printf "%s-postgres" (include "countersign.fullname" .)) -}}
{{- end -}}

{{/*
The volume behind /var/lib/countersign: "pvc" or "emptyDir". With SQLite,
gateway mode defaults to a PVC (the record survives restarts) and sidecar
mode to a per-pod emptyDir (never one PVC shared by several agent pods).
With PostgreSQL nothing durable lives in the pod.
*/}}
{{- define "countersign.dataVolumeType" -}}
{{- if eq .Values.store.type "postgres" -}}
emptyDir
{{- else if .Values.persistence.type -}}
{{- .Values.persistence.type -}}
{{- else if eq .Values.mode "sidecar" -}}
emptyDir
{{- else -}}
pvc
{{- end -}}
{{- end -}}

{{/*
Values the chart refuses, each with what to do instead. Included by
templates/validate.yaml so `helm template`, `helm install` and `helm upgrade`
stop before anything is applied. (`helm lint` only logs a template's fail.)
*/}}
{{- define "countersign.validate" -}}
{{- $v := .Values -}}
{{- if not (has $v.mode (list "gateway" "sidecar")) -}}
{{- fail (printf "mode is %q: use gateway or sidecar" (toString $v.mode)) -}}
{{- end -}}
{{- if not (has $v.store.type (list "sqlite" "postgres")) -}}
{{- fail (printf "store.type is %q: use sqlite or postgres" (toString $v.store.type)) -}}
{{- end -}}
{{- if and $v.persistence.type (not (has $v.persistence.type (list "pvc" "emptyDir"))) -}}
{{- fail (printf "persistence.type is %q: use pvc, emptyDir, or leave it empty" (toString $v.persistence.type)) -}}
{{- end -}}
{{- $pg := $v.store.postgres -}}
{{- if eq $v.store.type "sqlite" -}}
  {{- if and (eq $v.mode "gateway") (gt (int $v.replicaCount) 1) -}}
  {{- fail (printf "replicaCount is %d but store.type is sqlite: several pods would be several writers on one SQLite file (and one record split across pods). Keep replicaCount: 1, or set store.type: postgres (with store.postgres.dsn) so every replica shares one record, one review queue and one chain." (int $v.replicaCount)) -}}
  {{- end -}}
  {{- if and (eq $v.mode "sidecar") (or (eq (include "countersign.dataVolumeType" $) "pvc") $v.persistence.existingClaim) -}}
  {{- fail "persistence.type pvc (or persistence.existingClaim) in sidecar mode with store.type sqlite: every agent pod would write to one SQLite file on one shared claim. Use persistence.type: emptyDir (each pod keeps its own record, lost with the pod) or store.type: postgres (one shared record)." -}}
  {{- end -}}
  {{- if $pg.dsn -}}
  {{- fail "store.postgres.dsn is set but store.type is sqlite: set store.type: postgres to use PostgreSQL, or remove the dsn." -}}
  {{- end -}}
{{- else -}}
  {{- if not $pg.dsn -}}
  {{- fail "store.type is postgres but store.postgres.dsn is empty: set it, e.g. postgres://countersign@db.example:5432/countersign?sslmode=verify-full" -}}
  {{- end -}}
  {{- if not (regexMatch "^postgres(ql)?://" $pg.dsn) -}}
  {{- fail "store.postgres.dsn must start with postgres:// (or postgresql://)" -}}
  {{- end -}}
  {{- if or (regexMatch "^postgres(ql)?://[^/?#@]*:[^/?#@]*@" $pg.dsn) (regexMatch "(?i)[?&]password=" $pg.dsn) -}}
  {{- fail "store.postgres.dsn contains a password: the dsn goes into a ConfigMap. Remove it and put the password in a Secret (store.postgres.existingSecret)." -}}
  {{- end -}}
  {{- if and $pg.existingSecret $pg.password -}}
  {{- fail "store.postgres.existingSecret and store.postgres.password are both set: use one (prefer existingSecret)." -}}
  {{- end -}}
  {{- if not (or $pg.existingSecret $pg.password) -}}
  {{- fail "store.type is postgres but there is no password: set store.postgres.existingSecret (and passwordKey) to a Secret holding it." -}}
  {{- end -}}
  {{- if and $pg.ca.existingSecret $pg.ca.existingConfigMap -}}
  {{- fail "store.postgres.ca.existingSecret and store.postgres.ca.existingConfigMap are both set: name one." -}}
  {{- end -}}
  {{- if or (eq (toString $v.persistence.type) "pvc") $v.persistence.existingClaim -}}
  {{- fail "persistence.type is pvc (or persistence.existingClaim is set) but store.type is postgres: the record lives in PostgreSQL and the pod keeps nothing durable. Leave persistence.type empty." -}}
  {{- end -}}
{{- end -}}
{{- $id := $v.identity -}}
{{- if and $id.pod.enabled (ne $v.mode "sidecar") -}}
{{- fail "identity.pod.enabled needs mode: sidecar: the pod identity may only be asserted by a sidecar that takes calls from inside its pod (the proxy then listens on 127.0.0.1). In gateway mode, use identity.jwt." -}}
{{- end -}}
{{- if $id.jwt.enabled -}}
  {{- if not $id.jwt.issuer -}}
  {{- fail "identity.jwt.enabled but identity.jwt.issuer is empty: set the tokens' issuer (kubectl get --raw /.well-known/openid-configuration)." -}}
  {{- end -}}
  {{- $sources := 0 -}}
  {{- range (list $id.jwt.jwksUrl $id.jwt.jwksConfigMap $id.jwt.jwks) -}}{{- if . -}}{{- $sources = add1 $sources -}}{{- end -}}{{- end -}}
  {{- if ne (int $sources) 1 -}}
  {{- fail "identity.jwt.enabled needs exactly one of identity.jwt.jwksUrl, identity.jwt.jwksConfigMap or identity.jwt.jwks (the issuer's signing keys)." -}}
  {{- end -}}
{{- end -}}
{{- end -}}

{{/* The ConfigMap holding the JWKS, when the keys come from one. */}}
{{- define "countersign.jwksConfigMapName" -}}
{{- .Values.identity.jwt.jwksConfigMap | default (printf "%s-jwks" (include "countersign.fullname" .)) -}}
{{- end -}}

{{- define "countersign.jwksFromConfigMap" -}}
{{- if and .Values.identity.jwt.enabled (not .Values.identity.jwt.jwksUrl) }}true{{ end -}}
{{- end -}}

{{/* The countersign.yaml the chart generates (docs/reference.md#configuration). */}}
{{- define "countersign.configYaml" -}}
{{- if .Values.identity.pod.enabled }}
# Sidecar with pod identity: only the pod's own containers reach the proxy.
listen: 127.0.0.1:{{ .Values.proxy.port }}
{{- else }}
listen: 0.0.0.0:{{ .Values.proxy.port }}
{{- end }}
admin:
  listen: 0.0.0.0:{{ .Values.admin.port }}
  {{- if or .Values.secrets.existingSecret .Values.secrets.create.adminToken }}
  token_file: /etc/countersign/secrets/admin-token
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
    key_file: /etc/countersign/secrets/reviewer-{{ $name }}
    groups: {{ toJson (($r | default dict).groups | default list) }}
{{- end }}
{{- else }}
reviewers: {}
{{- end }}
{{- if .Values.config.notify }}
notify:
{{- range $i, $n := .Values.config.notify }}
  - url: {{ $n.url | quote }}
    secret_file: /etc/countersign/secrets/notify-{{ $i }}
{{- end }}
{{- else }}
notify: []
{{- end }}
audit:
{{- if eq .Values.store.type "postgres" }}
  store: {{ .Values.store.postgres.dsn | quote }}
  password_file: /etc/countersign/pg/password
  {{- if or .Values.store.postgres.ca.existingSecret .Values.store.postgres.ca.existingConfigMap }}
  ca_file: /etc/countersign/pg/ca.pem
  {{- end }}
{{- else }}
  store: "sqlite:///var/lib/countersign/audit.db"
{{- end }}
log:
{{- toYaml .Values.config.log | nindent 2 }}
{{- $id := .Values.identity }}
{{- if or $id.jwt.enabled $id.pod.enabled }}
identity:
  {{- if $id.jwt.enabled }}
  jwt:
    {{- if $id.jwt.jwksUrl }}
    jwks_url: {{ $id.jwt.jwksUrl | quote }}
    {{- else }}
    jwks_file: /etc/countersign/jwks/jwks.json
    {{- end }}
    issuer: {{ $id.jwt.issuer | quote }}
    audience: {{ $id.jwt.audience | quote }}
    leeway: {{ $id.jwt.leeway }}
  {{- end }}
  {{- if $id.pod.enabled }}
  pod: { subject_env: POD_IDENTITY }
  {{- end }}
{{- end }}
{{- end -}}

{{/* Whether a Secret (the user's or the chart's) holds countersign's secrets. */}}
{{- define "countersign.hasSecret" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.create.adminToken .Values.secrets.create.reviewers .Values.secrets.create.notify }}true{{ end -}}
{{- end -}}

{{/*
Environment. The admin token, reviewer keys and notify secrets are files
from the Secret (/etc/countersign/secrets), not variables: the kubelet
updates a mounted Secret in running pods, so a rotated key reaches
countersign, which reloads it. Only extraEnvFromSecret (for config keys
that name an environment variable) and extraEnv are variables.
*/}}
{{- define "countersign.env" -}}
{{- $secret := include "countersign.secretName" . -}}
{{- range $env, $key := .Values.secrets.extraEnvFromSecret }}
- name: {{ $env }}
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: {{ $key }} } }
{{- end }}
{{- if .Values.identity.pod.enabled }}
# The pod's identity (identity.pod), from the downward API.
- name: POD_NAMESPACE
  valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
- name: POD_SERVICE_ACCOUNT
  valueFrom: { fieldRef: { fieldPath: spec.serviceAccountName } }
- name: POD_NAME
  valueFrom: { fieldRef: { fieldPath: metadata.name } }
- name: POD_IDENTITY
  value: "$(POD_NAMESPACE)/$(POD_SERVICE_ACCOUNT)/$(POD_NAME)"
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
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
  {{- if include "countersign.hasSecret" . }}
  # The Secret as files, a directory mount (never subPath), so rotation
  # reaches the pod.
  - { name: countersign-secrets, mountPath: /etc/countersign/secrets, readOnly: true }
  {{- end }}
  {{- if include "countersign.jwksFromConfigMap" . }}
  # A directory mount (never subPath): rotated keys reach the pod, and
  # countersign reloads the file when it changes.
  - { name: countersign-jwks, mountPath: /etc/countersign/jwks, readOnly: true }
  {{- end }}
  {{- if eq .Values.store.type "postgres" }}
  # The whole directory, never a subPath: the kubelet only updates
  # directory mounts, and that is how a rotated password reaches the pod.
  - { name: countersign-postgres, mountPath: /etc/countersign/pg, readOnly: true }
  {{- end }}
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
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
{{- if include "countersign.hasSecret" . }}
- name: countersign-secrets
  secret: { secretName: {{ include "countersign.secretName" . }}, defaultMode: 0440 }
{{- end }}
- name: countersign-policies
  configMap: { name: {{ include "countersign.policiesConfigMapName" . }} }
{{- if include "countersign.jwksFromConfigMap" . }}
- name: countersign-jwks
  configMap: { name: {{ include "countersign.jwksConfigMapName" . }}, items: [{ key: jwks.json, path: jwks.json }] }
{{- end }}
- name: countersign-data
{{- if eq (include "countersign.dataVolumeType" .) "pvc" }}
  persistentVolumeClaim: { claimName: {{ .Values.persistence.existingClaim | default (printf "%s-data" (include "countersign.fullname" .)) }} }
{{- else }}
  emptyDir: {}
{{- end }}
{{- if eq .Values.store.type "postgres" }}
{{- $ca := .Values.store.postgres.ca }}
# The PostgreSQL password (and CA) as files in /etc/countersign/pg, readable
# by the pod's fsGroup only.
- name: countersign-postgres
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ include "countersign.postgresSecretName" . }}
          items: [{ key: {{ .Values.store.postgres.passwordKey | quote }}, path: password }]
      {{- if $ca.existingSecret }}
      - secret:
          name: {{ $ca.existingSecret }}
          items: [{ key: {{ $ca.key | quote }}, path: ca.pem }]
      {{- else if $ca.existingConfigMap }}
      - configMap:
          name: {{ $ca.existingConfigMap }}
          items: [{ key: {{ $ca.key | quote }}, path: ca.pem }]
      {{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The ServiceAccount the gateway pods run as. */}}
{{- define "countersign.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "countersign.fullname" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/*
What the pods' config checksum covers: the generated config, or with
config.existingConfigMap that ConfigMap's name and (when the cluster can be
asked, as at install and upgrade) its data, so an edit to it rolls the pods.
*/}}
{{- define "countersign.configChecksum" -}}
{{- if .Values.config.existingConfigMap -}}
{{- $cm := lookup "v1" "ConfigMap" .Release.Namespace .Values.config.existingConfigMap -}}
{{- printf "%s\n%s" .Values.config.existingConfigMap (toJson (($cm | default dict).data | default dict)) | sha256sum -}}
{{- else -}}
{{- include "countersign.configYaml" . | sha256sum -}}
{{- end -}}
{{- end -}}
