{{/*
Names, labels and the few values several templates compute. Everything here is pure: no
template below reads .Values directly for a name another template also needs.
*/}}

{{- define "gyro.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-gyro, or the release name when it already contains the chart's name. Kept short
     enough that "<fullname>-controller-http" and "<fullname>-etcd-peer" stay DNS labels. */}}
{{- define "gyro.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gyro.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gyro.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gyro
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "controller"). */}}
{{- define "gyro.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gyro.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gyro.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gyro.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gyro.authSecretName" -}}
{{- default (printf "%s-auth" (include "gyro.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "gyro.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "gyro.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{/* image reference: call with (dict "ctx" $ "image" .Values.controller.image) */}}
{{- define "gyro.image" -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/* The controller's gRPC address as workers and gyroctl dial it (the Service). */}}
{{- define "gyro.controllerAddr" -}}
{{- printf "%s-controller.%s.svc:%d" (include "gyro.fullname" .) .Release.Namespace (int .Values.controller.grpcPort) -}}
{{- end -}}

{{/* The --store flag value: etcd://member,member,... (empty with etcd.mode none). */}}
{{- define "gyro.storeURL" -}}
{{- if eq .Values.etcd.mode "bundled" -}}
{{- $full := include "gyro.fullname" . -}}
{{- $eps := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $eps = append $eps (printf "%s-etcd-%d.%s-etcd-peer.%s.svc:%d" $full $i $full $.Release.Namespace (int $.Values.etcd.clientPort)) -}}
{{- end -}}
{{- printf "etcd://%s" (join "," $eps) -}}
{{- else if eq .Values.etcd.mode "external" -}}
{{- printf "etcd://%s" (join "," .Values.etcd.external.endpoints) -}}
{{- end -}}
{{- end -}}

{{/* Container security context shared by every container the chart runs. */}}
{{- define "gyro.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gyro.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
Cross-field checks values.schema.json cannot express (the schema's allOf holds the others, so
that helm lint reports them too); each fails the render with the keys named. helm lint only
logs a template's fail, helm template and helm install stop on it.
*/}}
{{- define "gyro.checks" -}}
{{- $tp := int .Values.run.controller.tp -}}
{{- $world := int .Values.workers.replicas -}}
{{- if ne (mod $world $tp) 0 -}}
{{- fail (printf "workers.replicas (%d) must be a multiple of run.controller.tp (%d)" $world $tp) -}}
{{- end -}}
{{- if and .Values.controller.pdb.enabled (gt (int .Values.controller.replicas) 1) (ge (int .Values.controller.pdb.minAvailable) (int .Values.controller.replicas)) -}}
{{- fail (printf "controller.pdb.minAvailable (%d) must be below controller.replicas (%d), or no controller could ever be evicted" (int .Values.controller.pdb.minAvailable) (int .Values.controller.replicas)) -}}
{{- end -}}
{{- if and (eq .Values.controller.http.port .Values.controller.grpcPort) .Values.controller.http.enabled -}}
{{- fail (printf "controller.http.port and controller.grpcPort are both %d" (int .Values.controller.grpcPort)) -}}
{{- end -}}
{{- if .Values.tls.enabled -}}
{{- if not .Values.tls.existingSecret -}}
{{- range $k := list "ca" "cert" "key" "clientCert" "clientKey" -}}
{{- if not (index $.Values.tls $k) -}}
{{- fail (printf "tls.enabled without tls.existingSecret needs tls.%s (PEM text)" $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
