{{/* Names: everything is prefixed by the full name, truncated to fit DNS labels. */}}
{{- define "plait.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "plait.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Short names of the parts, leaving room for suffixes such as "-operator-metrics". */}}
{{- define "plait.operator.fullname" -}}{{ include "plait.fullname" . | trunc 45 | trimSuffix "-" }}-operator{{- end -}}
{{- define "plait.api.fullname" -}}{{ include "plait.fullname" . | trunc 45 | trimSuffix "-" }}-api{{- end -}}
{{- define "plait.migrate.fullname" -}}{{ include "plait.fullname" . | trunc 45 | trimSuffix "-" }}-migrate{{- end -}}
{{- define "plait.webhook.fullname" -}}{{ include "plait.fullname" . | trunc 45 | trimSuffix "-" }}-webhook{{- end -}}
{{- define "plait.postgresql.fullname" -}}{{ include "plait.fullname" . | trunc 45 | trimSuffix "-" }}-postgresql{{- end -}}

{{- define "plait.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "plait.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: plait
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "plait.selectorLabels" -}}
app.kubernetes.io/name: {{ include "plait.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one part: call with (dict "root" $ "component" "operator"). */}}
{{- define "plait.componentLabels" -}}
{{ include "plait.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "plait.componentSelectorLabels" -}}
{{ include "plait.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "plait.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The eight components; `plait operator` opens a pool for each of them. */}}
{{- define "plait.components" -}}
workflow_orchestrator event_processing task_execution integration auth testing_framework web_application observability
{{- end -}}

{{/* The components `plait api` opens a pool for (plait.api.app:serve): it gets only these
(integration: the Integration an inbound webhook is verified with; web_application: the
dashboard's components, which the API also changes). */}}
{{- define "plait.apiComponents" -}}
event_processing observability auth integration web_application
{{- end -}}

{{/* The components the dashboard only reads (plait.api.dashboard): with
database.componentRoles the API logs in to them as their read-only roles (testing_framework's
may also request a test run: plait.kernel.roles.READER_REQUESTS). */}}
{{- define "plait.apiReaderComponents" -}}
workflow_orchestrator task_execution testing_framework
{{- end -}}

{{/*
The API's DSNs of the components it only reads. With componentRoles: the read-only roles'
(key componentKeyPrefix + component + "-reader", optional: a Secret made before they existed
leaves those dashboard pages answering 503); database per component without component
roles: the components' own keys; one shared login: PLAIT_DATABASE_URL serves them already.
*/}}
{{- define "plait.apiReaderDatabaseEnv" -}}
{{- $v := .Values.database }}
{{- if or $v.componentRoles (include "plait.databasePerComponent" .) }}
{{- range $c := splitList " " (include "plait.apiReaderComponents" .) }}
- name: PLAIT_DATABASE_URL_{{ upper $c }}
  valueFrom:
    secretKeyRef:
      name: {{ include "plait.databaseSecret" $ }}
      {{- if $v.componentRoles }}
      key: {{ printf "%s%s-reader" $v.componentKeyPrefix (replace "_" "-" $c) }}
      optional: true
      {{- else }}
      key: {{ printf "%s%s" $v.componentKeyPrefix (replace "_" "-" $c) }}
      {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* "true" when the API's pods call the Kubernetes API (and so mount their token). */}}
{{- define "plait.api.kubernetesAccess" -}}
{{- if or .Values.auth.kubernetes.enabled .Values.api.webhookSecrets .Values.api.dashboard.runActions }}true{{ end -}}
{{- end -}}

{{/* Name of the Secret with the runtime DSNs: the bundled PostgreSQL's, or the user's. */}}
{{- define "plait.databaseSecret" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "plait.postgresql.fullname" . -}}
{{- else if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else -}}
{{- fail "database.existingSecret is required when postgresql.enabled is false: create a Secret with one DSN per component (url-<component>), the migration DSN (migration-url) and the components' passwords (password-<component>), see docs/install.md, and set database.existingSecret" -}}
{{- end -}}
{{- end -}}

{{- define "plait.migrationSecret" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "plait.postgresql.fullname" . -}}
{{- else -}}
{{- default (include "plait.databaseSecret" .) .Values.database.migration.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* "true" when every database lives in its own database (never with the bundled one). */}}
{{- define "plait.databasePerComponent" -}}
{{- if and .Values.database.perComponent (not .Values.postgresql.enabled) }}true{{ end -}}
{{- end -}}

{{/*
DSN environment variables: call with (dict "secret" NAME "urlKey" KEY "prefix" PREFIX
"perComponent" BOOL "components" LIST). Per component, each component gets
PLAIT_DATABASE_URL_<COMPONENT> from the key PREFIX<component-with-dashes>; otherwise one
PLAIT_DATABASE_URL serves all of them.
*/}}
{{- define "plait.databaseEnv" -}}
{{- if .perComponent }}
{{- range $c := splitList " " .components }}
- name: PLAIT_DATABASE_URL_{{ upper $c }}
  valueFrom:
    secretKeyRef:
      name: {{ $.secret }}
      key: {{ printf "%s%s" $.prefix (replace "_" "-" $c) }}
{{- end }}
{{- else }}
- name: PLAIT_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .urlKey }}
{{- end }}
{{- end -}}

{{/*
DSNs of a running process: call with (dict "root" $ "components" LIST). With
database.componentRoles (the default) each component logs in as its own role.
*/}}
{{- define "plait.runtimeDatabaseEnv" -}}
{{- $v := .root.Values.database }}
{{- $perComponent := or $v.componentRoles (include "plait.databasePerComponent" .root) }}
{{- include "plait.databaseEnv" (dict "secret" (include "plait.databaseSecret" .root) "urlKey" $v.urlKey "prefix" $v.componentKeyPrefix "perComponent" $perComponent "components" .components) }}
{{- end -}}

{{/*
The migration Job's DSNs, and, when it creates the component roles, their LOGIN passwords
(PLAIT_DATABASE_PASSWORD_<COMPONENT>, read by `plait migrate --create-roles`).
*/}}
{{- define "plait.migrationDatabaseEnv" -}}
{{- $m := .Values.database.migration }}
{{- include "plait.databaseEnv" (dict "secret" (include "plait.migrationSecret" .) "urlKey" $m.urlKey "prefix" $m.componentKeyPrefix "perComponent" (include "plait.databasePerComponent" .) "components" (include "plait.components" .)) }}
{{- if and $m.createRoles .Values.database.componentRoles }}
{{- range $c := splitList " " (include "plait.components" .) }}
- name: PLAIT_DATABASE_PASSWORD_{{ upper $c }}
  valueFrom:
    secretKeyRef:
      name: {{ include "plait.migrationSecret" $ }}
      key: {{ printf "%s%s" $m.passwordKeyPrefix (replace "_" "-" $c) }}
{{- end }}
{{- range $c := splitList " " (include "plait.apiReaderComponents" .) }}
- name: PLAIT_DATABASE_PASSWORD_{{ upper $c }}_READER
  valueFrom:
    secretKeyRef:
      name: {{ include "plait.migrationSecret" $ }}
      key: {{ printf "%s%s-reader" $m.passwordKeyPrefix (replace "_" "-" $c) }}
      optional: true
{{- end }}
{{- end }}
{{- end -}}

{{/* Environment every Plait process shares. */}}
{{- define "plait.commonEnv" -}}
- name: PLAIT_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: PLAIT_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: PLAIT_POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* Namespaces the operator watches when it is not cluster-wide. */}}
{{- define "plait.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- join " " (uniq .Values.operator.watchNamespaces) -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}
