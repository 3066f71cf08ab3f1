{{/* Names and labels. */}}
{{- define "sealgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sealgate.fullname" -}}
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

{{- define "sealgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sealgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sealgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sealgate.labels" -}}
helm.sh/chart: {{ include "sealgate.chart" . }}
{{ include "sealgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: admission-webhook
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sealgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sealgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sealgate.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "sealgate.policiesConfigMap" -}}
{{- printf "%s-policies" (include "sealgate.fullname" .) }}
{{- end }}

{{- define "sealgate.trustedRootsConfigMap" -}}
{{- default (printf "%s-trusted-roots" (include "sealgate.fullname" .)) .Values.trustedRoots.existingConfigMap }}
{{- end }}

{{- define "sealgate.trustedRootsEnabled" -}}
{{- if or .Values.trustedRoots.existingConfigMap .Values.trustedRoots.files }}true{{ end }}
{{- end }}

{{/* The shared cache (SPEC §9): a URL (or a Secret holding one) and the HMAC key Secret. */}}
{{- define "sealgate.sharedCacheEnabled" -}}
{{- if or .Values.sharedCache.url .Values.sharedCache.urlSecret.name }}
{{- if not .Values.sharedCache.keySecret.name }}
{{- fail "sharedCache.keySecret.name is required with a shared cache URL: a Secret holding the key that authenticates cache entries (e.g. kubectl create secret generic sealgate-cache-key --from-literal=cache.key=$(head -c 32 /dev/urandom | base64))" }}
{{- end }}
{{- if and .Values.sharedCache.url .Values.sharedCache.urlSecret.name }}
{{- fail "sharedCache: set url or urlSecret, not both" }}
{{- end }}
{{- if and .Values.sharedCache.url (not (regexMatch "^rediss?://" .Values.sharedCache.url)) }}
{{- fail "sharedCache.url must start with redis:// or rediss://" }}
{{- end }}true
{{- end }}
{{- end }}

{{/* SEALGATE_DEADLINE: stays below the API server's timeoutSeconds (SPEC §4). */}}
{{- define "sealgate.deadline" -}}
{{- if .Values.config.deadline }}
{{- .Values.config.deadline }}
{{- else }}
{{- $timeout := int .Values.webhook.timeoutSeconds }}
{{- if ge $timeout 4 }}
{{- printf "%ds" (sub $timeout 2) }}
{{- else }}
{{- printf "%dms" (mul $timeout 800) }}
{{- end }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- TLS */}}

{{- define "sealgate.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "sealgate.fullname" .)) .Values.tls.secretName }}
{{- end }}

{{/* The names the API server and Prometheus use to reach the Service. */}}
{{- define "sealgate.dnsNames" -}}
{{- $service := include "sealgate.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $service (printf "%s.%s" $service $ns) (printf "%s.%s.svc" $service $ns) (printf "%s.%s.svc.cluster.local" $service $ns) | toJson }}
{{- end }}

{{- define "sealgate.certManagerCertificate" -}}
{{- printf "%s-serving" (include "sealgate.fullname" .) }}
{{- end }}

{{/*
tls.mode=helm: the CA and serving certificate, as base64 PEM {ca, crt, key}.
Reused from the Secret of a previous install (`lookup`) while it names the same Service;
otherwise generated. Memoised in .Values so the Secret, both webhook configurations and the
Deployment's checksum all see the same certificate within one render.
*/}}
{{- define "sealgate.helmCertificates" -}}
{{- if not (hasKey .Values "sealgateGeneratedTLS") }}
{{- $dnsNames := include "sealgate.dnsNames" . | fromJsonArray }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "sealgate.tlsSecretName" .) }}
{{- $ca := dig "data" "ca.crt" "" $existing }}
{{- $crt := dig "data" "tls.crt" "" $existing }}
{{- $key := dig "data" "tls.key" "" $existing }}
{{- $names := dig "metadata" "annotations" "sealgate.dev/dns-names" "" $existing }}
{{- $material := dict }}
{{- if and $ca $crt $key (eq $names (join "," $dnsNames)) }}
{{- $material = dict "ca" $ca "crt" $crt "key" $key }}
{{- else }}
{{- $days := int .Values.tls.helm.days }}
{{- $caCert := genCA (printf "%s-ca" (include "sealgate.fullname" .)) $days }}
{{- $cert := genSignedCert (index $dnsNames 2) nil $dnsNames $days $caCert }}
{{- $material = dict "ca" ($caCert.Cert | b64enc) "crt" ($cert.Cert | b64enc) "key" ($cert.Key | b64enc) }}
{{- end }}
{{- $_ := set .Values "sealgateGeneratedTLS" $material }}
{{- end }}
{{- toJson (get .Values "sealgateGeneratedTLS") }}
{{- end }}

{{/* The caBundle field of the webhook configurations (base64 PEM), or nothing. */}}
{{- define "sealgate.caBundle" -}}
{{- if eq .Values.tls.mode "helm" }}
{{- (include "sealgate.helmCertificates" . | fromJson).ca }}
{{- else if eq .Values.tls.mode "existingSecret" }}
{{- $bundle := required "tls.caBundle is required with tls.mode=existingSecret: the CA that signed the Secret's tls.crt (`sealgate certs` prints it)" .Values.tls.caBundle }}
{{- if hasPrefix "-----BEGIN" (trim $bundle) }}
{{- $bundle | b64enc }}
{{- else }}
{{- $bundle | nospace }}
{{- end }}
{{- end }}
{{- end }}

{{/* Annotations of the webhook configurations: cert-manager's CA injector. */}}
{{- define "sealgate.webhookAnnotations" -}}
{{- if eq .Values.tls.mode "certManager" -}}
annotations:
  cert-manager.io/inject-ca-from: {{ printf "%s/%s" .Release.Namespace (include "sealgate.certManagerCertificate" .) }}
{{- end }}
{{- end }}

{{/*
checksum/tls on the pod template: changes when the serving certificate changes, so pods
roll on certificate changes only (SPEC §8) -- never on policy edits, which are hot-reloaded.
*/}}
{{- define "sealgate.tlsChecksum" -}}
{{- $secret := include "sealgate.tlsSecretName" . }}
{{- if eq .Values.tls.mode "helm" }}
{{- $tls := include "sealgate.helmCertificates" . | fromJson }}
{{- /* Public parts only: a new key always comes with a new certificate. */}}
{{- dict "ca" $tls.ca "crt" $tls.crt | toJson | sha256sum }}
{{- else }}
{{- $current := lookup "v1" "Secret" .Release.Namespace $secret }}
{{- $inputs := dict "mode" .Values.tls.mode "secret" $secret "crt" (dig "data" "tls.crt" "" $current) }}
{{- if eq .Values.tls.mode "existingSecret" }}
{{- $_ := set $inputs "caBundle" (include "sealgate.caBundle" .) }}
{{- else }}
{{- $_ := set $inputs "certManager" .Values.tls.certManager }}
{{- $_ := set $inputs "dnsNames" (include "sealgate.dnsNames" .) }}
{{- end }}
{{- toJson $inputs | sha256sum }}
{{- end }}
{{- end }}

{{/* One webhook entry: $ is the root context, path and name vary (SPEC §7). */}}
{{- define "sealgate.webhook" -}}
{{- $root := .root -}}
- name: {{ .name }}
  admissionReviewVersions: ["v1"]
  sideEffects: None
  failurePolicy: {{ $root.Values.webhook.failurePolicy }}
  timeoutSeconds: {{ $root.Values.webhook.timeoutSeconds }}
  matchPolicy: Equivalent
  {{- with .reinvocationPolicy }}
  reinvocationPolicy: {{ . }}
  {{- end }}
  clientConfig:
    service:
      name: {{ include "sealgate.fullname" $root }}
      namespace: {{ $root.Release.Namespace }}
      path: {{ .path }}
      port: 443
    {{- with include "sealgate.caBundle" $root }}
    caBundle: {{ . }}
    {{- end }}
  namespaceSelector:
    matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: NotIn
        values:
          {{- range concat (list "kube-system" $root.Release.Namespace) $root.Values.webhook.excludeNamespaces | uniq }}
          - {{ . | quote }}
          {{- end }}
  rules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["pods", "pods/ephemeralcontainers", "replicationcontrollers"]
      scope: Namespaced
    - apiGroups: ["apps"]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["deployments", "replicasets", "statefulsets", "daemonsets"]
      scope: Namespaced
    - apiGroups: ["batch"]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["jobs", "cronjobs"]
      scope: Namespaced
{{- end }}

{{/* Whether sealgate watches ImagePolicy objects (and so talks to the API server). */}}
{{- define "sealgate.watchesCRD" -}}
{{- if ne .Values.policySource "files" }}true{{ end -}}
{{- end }}

{{/* Whether sealgate calls the API server at all (its pods then get a token). */}}
{{- define "sealgate.usesAPI" -}}
{{- if or (include "sealgate.watchesCRD" .) .Values.podPullSecrets.enabled }}true{{ end -}}
{{- end }}

{{/*
Worker processes: config.workers, else whole CPUs of resources.limits.cpu ("1", "2",
"1500m" -> 1), at least 1. One worker per core uses the CPU limit without contention.
*/}}
{{- define "sealgate.workers" -}}
{{- if .Values.config.workers -}}
{{- .Values.config.workers -}}
{{- else -}}
{{- $cpu := toString (dig "limits" "cpu" "1" (.Values.resources | default dict)) -}}
{{- $workers := 1 -}}
{{- if hasSuffix "m" $cpu -}}
{{- $workers = div (atoi (trimSuffix "m" $cpu)) 1000 -}}
{{- else -}}
{{- $workers = int (floor (float64 $cpu)) -}}
{{- end -}}
{{- max 1 $workers -}}
{{- end -}}
{{- end -}}
