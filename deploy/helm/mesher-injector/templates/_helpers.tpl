{{/* The injector's namespace: .Values.namespace, else the release's. */}}
{{- define "mesher-injector.namespace" -}}
{{- default .Release.Namespace .Values.namespace -}}
{{- end -}}

{{/* The labels every object carries: deploy/'s two, and Helm's. */}}
{{- define "mesher-injector.labels" -}}
app.kubernetes.io/name: mesher-injector
app.kubernetes.io/part-of: mesher-injector
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mesher-injector.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{ $image.repository }}@{{ $image.digest }}
{{- else -}}
{{ $image.repository }}:{{ default .Chart.AppVersion $image.tag }}
{{- end -}}
{{- end -}}

{{/* The Secret the injector serves its certificate from. */}}
{{- define "mesher-injector.tlsSecret" -}}
{{- if eq .Values.certificates.source "provided" -}}
{{ .Values.certificates.provided.secretName }}
{{- else -}}
mesher-injector-tls
{{- end -}}
{{- end -}}

{{/* The serving certificate's DNS names: the Service's, as `mesher-injector certs` and
deploy/cert-manager/ issue them. */}}
{{- define "mesher-injector.dnsNames" -}}
{{- $ns := include "mesher-injector.namespace" . -}}
- mesher-injector.{{ $ns }}.svc
- mesher-injector
- mesher-injector.{{ $ns }}
- mesher-injector.{{ $ns }}.svc.cluster.local
{{- end -}}

{{/*
certificates.source=selfSigned: the CA and the serving certificate, as YAML (caCert, caKey,
tlsCert, tlsKey: PEM; notAfter: the serving certificate's expiry, RFC 3339). Both are
read back from their Secrets (lookup) and kept, so an upgrade never changes the CA the
webhooks trust; the serving certificate is issued anew, from the same CA, when it is
absent, from another CA, or expires within renewBeforeDays. Without a cluster (helm
template, helm lint) lookup finds nothing and both are new.
*/}}
{{- define "mesher-injector.selfSigned" -}}
{{- $ns := include "mesher-injector.namespace" . -}}
{{- $spec := .Values.certificates.selfSigned -}}
{{- $caSecret := lookup "v1" "Secret" $ns "mesher-injector-ca" -}}
{{- $caCert := "" -}}
{{- $caKey := "" -}}
{{- if $caSecret -}}
{{- $caCert = index $caSecret.data "tls.crt" | b64dec -}}
{{- $caKey = index $caSecret.data "tls.key" | b64dec -}}
{{- else -}}
{{- $ca := genCA "mesher-injector CA" (int $spec.caDays) -}}
{{- $caCert = $ca.Cert -}}
{{- $caKey = $ca.Key -}}
{{- end -}}
{{- $tlsSecret := lookup "v1" "Secret" $ns "mesher-injector-tls" -}}
{{- $tlsCert := "" -}}
{{- $tlsKey := "" -}}
{{- $notAfter := "" -}}
{{- $renew := true -}}
{{- if $tlsSecret -}}
{{- $notAfter = index ($tlsSecret.metadata.annotations | default dict) "sidecar.mesher.io/not-after" | default "" -}}
{{- $sameCA := eq (index $tlsSecret.data "ca.crt" | default "" | b64dec) $caCert -}}
{{- if and $notAfter $sameCA -}}
{{- $renewAt := sub (toDate "2006-01-02T15:04:05Z07:00" $notAfter | unixEpoch | atoi) (mul (int $spec.renewBeforeDays) 86400) -}}
{{- $renew = le $renewAt (now | unixEpoch | atoi) -}}
{{- end -}}
{{- end -}}
{{- if $renew -}}
{{- $ca := buildCustomCert ($caCert | b64enc) ($caKey | b64enc) -}}
{{- $cert := genSignedCert (printf "mesher-injector.%s.svc" $ns) nil (include "mesher-injector.dnsNames" . | fromYamlArray) (int $spec.days) $ca -}}
{{- $tlsCert = $cert.Cert -}}
{{- $tlsKey = $cert.Key -}}
{{- $notAfter = now | dateModify (printf "+%dh" (mul (int $spec.days) 24)) | date "2006-01-02T15:04:05Z07:00" -}}
{{- else -}}
{{- $tlsCert = index $tlsSecret.data "tls.crt" | b64dec -}}
{{- $tlsKey = index $tlsSecret.data "tls.key" | b64dec -}}
{{- end -}}
caCert: {{ $caCert | quote }}
caKey: {{ $caKey | quote }}
tlsCert: {{ $tlsCert | quote }}
tlsKey: {{ $tlsKey | quote }}
notAfter: {{ $notAfter | quote }}
{{- end -}}
