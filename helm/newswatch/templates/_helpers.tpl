{{/*
Helpers of the newswatch chart. Every template is prefixed with `newswatch.`.
*/}}

{{/* Chart name, overridable with nameOverride. */}}
{{- define "newswatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* `<release>-<chart>` unless the release name already contains the chart name; at most 63 chars. */}}
{{- define "newswatch.fullname" -}}
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

{{/* `chart-version` for the helm.sh/chart label. */}}
{{- define "newswatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "newswatch.labels" -}}
helm.sh/chart: {{ include "newswatch.chart" . }}
{{ include "newswatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: newswatch
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels shared by every object of the release. */}}
{{- define "newswatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "newswatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: (dict "root" $ "component" "classify-cpu"). */}}
{{- define "newswatch.componentLabels" -}}
{{ include "newswatch.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Selector labels of one component. */}}
{{- define "newswatch.componentSelectorLabels" -}}
{{ include "newswatch.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Common annotations block (metadata.annotations), empty when none. */}}
{{- define "newswatch.annotations" -}}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A container image reference: (dict "image" .Values.image "default" tag). */}}
{{- define "newswatch.imageRef" -}}
{{- $repo := .image.repository -}}
{{- if .image.registry -}}{{- $repo = printf "%s/%s" .image.registry .image.repository -}}{{- end -}}
{{- if .image.digest -}}
{{- printf "%s@%s" $repo .image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .default .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The CPU image. */}}
{{- define "newswatch.image" -}}
{{- include "newswatch.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{/* The CUDA image of classify-gpu. */}}
{{- define "newswatch.gpuImage" -}}
{{- include "newswatch.imageRef" (dict "image" .Values.gpuImage "default" (printf "%s-cuda" .Chart.AppVersion)) -}}
{{- end -}}

{{/* ServiceAccount name. */}}
{{- define "newswatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "newswatch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret with webhook URLs and keys; empty when there is none. */}}
{{- define "newswatch.secretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else if .Values.secrets.create -}}
{{- printf "%s-secrets" (include "newswatch.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Kafka bootstrap servers: the embedded broker's Service when enabled. */}}
{{- define "newswatch.bootstrapServers" -}}
{{- if .Values.broker.enabled -}}
{{- printf "%s-broker:%d" (include "newswatch.fullname" .) (int .Values.broker.port) -}}
{{- else -}}
{{- .Values.kafka.bootstrapServers -}}
{{- end -}}
{{- end -}}

{{/*
The enabled stages as YAML (`components: [...]`), read back with fromYaml.
Each has name, key (values section), args, gpu and autoscaled.
*/}}
{{- define "newswatch.components" -}}
components:
{{- if .Values.classifyCpu.enabled }}
  - {name: classify-cpu, key: classifyCpu, args: [classify], gpu: false, autoscaled: true}
{{- end }}
{{- if .Values.classifyGpu.enabled }}
  - {name: classify-gpu, key: classifyGpu, args: [classify], gpu: true, autoscaled: true}
{{- end }}
{{- if .Values.aggregate.enabled }}
  - {name: aggregate, key: aggregate, args: [aggregate], gpu: false, autoscaled: false}
{{- end }}
{{- if .Values.alerts.enabled }}
  - {name: alerts-run, key: alerts, args: [alerts, run], gpu: false, autoscaled: false}
{{- end }}
{{- if eq (include "newswatch.notifyDeployed" .) "true" }}
  - {name: notify, key: notify, args: [notify], gpu: false, autoscaled: false}
{{- end }}
{{- end -}}

{{/*
"true" when the notifier runs: enabled and some sink is configured (webhook URLs, an
existing Secret, or notify.sinks / notify.webhook_urls in `config`). `newswatch notify`
exits with an error when it has no sink, so without one it is not deployed.
*/}}
{{- define "newswatch.notifyDeployed" -}}
{{- $notify := default dict .Values.config.notify -}}
{{- if and .Values.notify.enabled (or .Values.secrets.webhookUrls .Values.secrets.existingSecret $notify.sinks $notify.webhook_urls) -}}
true
{{- else -}}
false
{{- end -}}
{{- end -}}

{{/* The settings YAML mounted in every stage (NEWSWATCH_CONFIG). */}}
{{- define "newswatch.settings" -}}
{{- $kafka := dict
  "bootstrap_servers" (include "newswatch.bootstrapServers" .)
  "security_protocol" .Values.kafka.securityProtocol
  "partitions" (int .Values.kafka.partitions)
  "replication_factor" (ternary 1 (int .Values.kafka.replicationFactor) .Values.broker.enabled)
  "broker_compat" (ternary "tansu" "kafka" .Values.broker.enabled)
-}}
{{- if .Values.kafka.saslMechanism -}}
{{- $_ := set $kafka "sasl_mechanism" .Values.kafka.saslMechanism -}}
{{- $_ := set $kafka "sasl_plain_username" .Values.kafka.saslUsername -}}
{{- end -}}
{{- $t := .Values.kafka.topics -}}
{{- $topics := dict "posts" $t.posts "scored" $t.scored "panes" $t.panes "windows" $t.windows "alerts" $t.alerts "dead_letter" $t.deadLetter "alerts_dead_letter" $t.alertsDeadLetter -}}
{{- $metrics := dict "host" "0.0.0.0" "port" (int .Values.metrics.port) "top_k_entities" (int .Values.metrics.topKEntities) -}}
{{- $base := dict "kafka" $kafka "topics" $topics "metrics" $metrics "aggregate" (dict "data_dir" "/var/lib/newswatch/aggregate") -}}
{{- if eq .Values.model.source "volume" -}}
{{- $_ := set $base "models" (dict "dir" (trimSuffix "/" (printf "%s/%s" .Values.model.mountPath .Values.model.subPath))) -}}
{{- end -}}
{{- toYaml (mustMergeOverwrite $base (deepCopy .Values.config)) -}}
{{- end -}}

{{/* Environment of one stage: (dict "root" $ "c" component). */}}
{{- define "newswatch.env" -}}
{{- $root := .root -}}
{{- $values := index $root.Values .c.key -}}
{{- $secret := include "newswatch.secretName" $root -}}
- name: NEWSWATCH_CONFIG
  value: /etc/newswatch/settings.yaml
- name: PYTHONUNBUFFERED
  value: "1"
- name: HF_HUB_OFFLINE
  value: "1"
{{- if eq .c.name "classify-cpu" }}
- name: NEWSWATCH_MODELS_DEVICE
  value: cpu
- name: NEWSWATCH_MODELS_VARIANT
  value: {{ $values.variant | quote }}
- name: NEWSWATCH_MODELS_CPU_STREAMS
  value: {{ $values.cpuStreams | quote }}
- name: NEWSWATCH_MODELS_INTRA_OP_THREADS
  value: {{ $values.intraOpThreads | quote }}
{{- else if eq .c.name "classify-gpu" }}
- name: NEWSWATCH_MODELS_DEVICE
  value: cuda
- name: NEWSWATCH_MODELS_VARIANT
  value: {{ $values.variant | quote }}
- name: NEWSWATCH_MODELS_PROVIDERS
  value: {{ toJson $values.providers | quote }}
- name: NEWSWATCH_MODELS_BATCH_SIZE
  value: {{ $values.batchSize | quote }}
- name: NEWSWATCH_CLASSIFY_BATCH_SIZE
  value: {{ $values.batchSize | quote }}
{{- end }}
{{- if and $secret $root.Values.kafka.saslMechanism }}
- name: NEWSWATCH_KAFKA_SASL_PLAIN_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $root.Values.kafka.saslPasswordKey }}
{{- end }}
{{- if and $secret (eq .c.name "notify") }}
- name: NEWSWATCH_NOTIFY_WEBHOOK_URLS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: webhook-urls
      optional: true
- name: NEWSWATCH_NOTIFY_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: webhook-secret
      optional: true
{{- end }}
{{- with (include "newswatch.extra" (dict "root" $root "values" $values "field" "extraEnv" "key" "name")) }}
{{ . }}
{{- end }}
{{- end -}}

{{/*
"true" when a prometheus-operator object of (dict "root" $ "kind" "ServiceMonitor") is
rendered: its `enabled` value is on and the cluster serves monitoring.coreos.com/v1/<kind>
(Helm asks the cluster on install/upgrade; `helm template` knows it only from
`--api-versions monitoring.coreos.com/v1/<kind>`), or its `force` value says to render it anyway.
*/}}
{{- define "newswatch.monitoringApi" -}}
{{- $v := index .root.Values.metrics (untitle .kind) -}}
{{- if and $v.enabled (or $v.force (.root.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind))) -}}
true
{{- else -}}
false
{{- end -}}
{{- end -}}

{{/*
The rule groups (`groups:` as YAML) of rules/newswatch.rules.yaml, the one source of the
rules: every `job="newswatch"` (the file's selector, in expressions and annotations) becomes
`job="<metrics.job>"`, and every runbook_url `<file's base>#<anchor>` becomes
`<metrics.prometheusRule.runbookBaseUrl>#<anchor>`. With the default values the groups are
the file's, unchanged.
*/}}
{{- define "newswatch.rules" -}}
{{- $source := .Files.Get "rules/newswatch.rules.yaml" | fromYaml -}}
{{- $from := "job=\"newswatch\"" -}}
{{- $to := printf "job=%q" .Values.metrics.job -}}
{{- $base := .Values.metrics.prometheusRule.runbookBaseUrl -}}
{{- $groups := list -}}
{{- range $g := $source.groups -}}
{{- $rules := list -}}
{{- range $r := $g.rules -}}
{{- $rule := deepCopy $r -}}
{{- $_ := set $rule "expr" (replace $from $to (toString $rule.expr)) -}}
{{- $annotations := dict -}}
{{- range $k, $text := ($rule.annotations | default dict) -}}
{{- if eq $k "runbook_url" -}}
{{- $anchor := ternary (splitn "#" 2 $text)._1 "" (contains "#" $text) -}}
{{- $_ := set $annotations $k (ternary (printf "%s#%s" $base $anchor) $base (ne $anchor "")) -}}
{{- else -}}
{{- $_ := set $annotations $k (replace $from $to $text) -}}
{{- end -}}
{{- end -}}
{{- if $rule.annotations -}}
{{- $_ := set $rule "annotations" $annotations -}}
{{- end -}}
{{- $rules = append $rules $rule -}}
{{- end -}}
{{- $groups = append $groups (set (deepCopy $g) "rules" $rules) -}}
{{- end -}}
{{- toYaml (dict "groups" $groups) -}}
{{- end -}}

{{/*
Extra volumes, volume mounts or env of one stage: (dict "root" $ "values" <stage values>
"field" "extraVolumes" "key" "name"). The global list, then the stage's; a stage entry
replaces a global one with the same `key` (name; mountPath for mounts). Rendered with `tpl`,
so entries may use templates (`{{ .Release.Name }}`). Empty when there are none.
*/}}
{{- define "newswatch.extra" -}}
{{- $global := index .root.Values .field | default list -}}
{{- $stage := index .values .field | default list -}}
{{- $key := .key -}}
{{- $stageKeys := list -}}
{{- range $stage -}}
{{- $stageKeys = append $stageKeys (toString (index . $key)) -}}
{{- end -}}
{{- $merged := list -}}
{{- range $global -}}
{{- if not (has (toString (index . $key)) $stageKeys) -}}
{{- $merged = append $merged . -}}
{{- end -}}
{{- end -}}
{{- $merged = concat $merged $stage -}}
{{- if $merged -}}
{{- tpl (toYaml $merged) .root -}}
{{- end -}}
{{- end -}}

{{/*
The scraper peer of the metrics ingress (a NetworkPolicyPeer as YAML), empty when
networkPolicy.metrics names none: namespaceSelector and podSelector together select pods
of those namespaces; podSelector alone, pods of the release's namespace.
*/}}
{{- define "newswatch.metricsPeer" -}}
{{- $m := default dict .Values.networkPolicy.metrics -}}
{{- if or $m.namespaceSelector $m.podSelector -}}
- {{- with $m.namespaceSelector }}
  namespaceSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $m.podSelector }}
  podSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
{{- end -}}

{{/*
Secrets set inline in `config`, which would be rendered in plain text into the settings
ConfigMap: one message per value (never the value itself).
*/}}
{{- define "newswatch.inlineSecrets" -}}
{{- $notify := default dict .Values.config.notify -}}
{{- $kafka := default dict .Values.config.kafka -}}
{{- range $i, $sink := ($notify.sinks | default list) -}}
{{- range $field := list "url" "secret" }}
{{- if hasKey $sink $field }}
config.notify.sinks[{{ $i }}].{{ $field }} ({{ $sink.name | default "unnamed" }}): a sink {{ $field }} must not be inline (it would be rendered in plain text into the ConfigMap); put it in a Secret (key in secrets.existingSecret) and set {{ $field }}_file: /var/run/secrets/newswatch/<key>
{{- end }}
{{- end }}
{{- end }}
{{- if $notify.webhook_urls }}
config.notify.webhook_urls: webhook URLs must not be inline (plain text in the ConfigMap); use the key webhook-urls of secrets.existingSecret (or secrets.webhookUrls)
{{- end }}
{{- if $notify.webhook_secret }}
config.notify.webhook_secret: the signing secret must not be inline (plain text in the ConfigMap); use the key webhook-secret of secrets.existingSecret (or secrets.webhookSecret)
{{- end }}
{{- if $kafka.sasl_plain_password }}
config.kafka.sasl_plain_password: the Kafka password must not be inline (plain text in the ConfigMap); use secrets.existingSecret (key kafka.saslPasswordKey) or secrets.kafkaSaslPassword
{{- end }}
{{- end -}}

{{/* Gathers every invalid combination of values and fails with all messages at once. */}}
{{- define "newswatch.validateValues" -}}
{{- $messages := list -}}
{{- if and (not .Values.broker.enabled) (not .Values.kafka.bootstrapServers) -}}
{{- $messages = append $messages "kafka.bootstrapServers: set it to your Kafka brokers (host:port,...), or set broker.enabled=true for a trial" -}}
{{- end -}}
{{- if and .Values.classifyGpu.enabled (lt (int .Values.classifyGpu.gpus) 1) -}}
{{- $messages = append $messages "classifyGpu.gpus: must be at least 1 when classifyGpu.enabled=true" -}}
{{- end -}}
{{- if and .Values.classifyGpu.enabled (eq .Values.classifyGpu.variant "int8") -}}
{{- $messages = append $messages "classifyGpu.variant: int8 graphs run on the CPU provider only; use fp16 (or fp32) on GPUs" -}}
{{- end -}}
{{- if gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas) -}}
{{- $messages = append $messages "autoscaling.minReplicas: must not exceed autoscaling.maxReplicas" -}}
{{- end -}}
{{- if gt (int .Values.aggregate.replicaCount) 1 -}}
{{- $messages = append $messages "aggregate.replicaCount: the aggregator keeps every window table in one faust worker, so it runs as one replica per app id (see docs/scaling.md for sharding)" -}}
{{- end -}}
{{- if and (eq .Values.model.source "volume") (empty .Values.model.volume) -}}
{{- $messages = append $messages "model.volume: model.source=volume needs a volume source (e.g. persistentVolumeClaim: {claimName: models})" -}}
{{- end -}}
{{- if and .Values.secrets.existingSecret (or .Values.secrets.webhookUrls .Values.secrets.webhookSecret .Values.secrets.kafkaSaslPassword) -}}
{{- $messages = append $messages "secrets: existingSecret is set, so webhookUrls/webhookSecret/kafkaSaslPassword would be ignored; put them in that Secret instead" -}}
{{- end -}}
{{- if and (eq .Values.autoscaling.mode "keda") (eq .Values.autoscaling.keda.trigger "kafka") .Values.kafka.saslMechanism -}}
{{- $messages = append $messages "autoscaling.keda.trigger: the kafka trigger would need a KEDA TriggerAuthentication for SASL, which this chart does not create; use trigger=prometheus" -}}
{{- end -}}
{{- $chartVolumes := list "settings" "tmp" "data" "secrets" "model" -}}
{{- range $i, $vol := (.Values.extraVolumes | default list) -}}
{{- if has $vol.name $chartVolumes -}}
{{- $messages = append $messages (printf "extraVolumes[%d]: the name %s is taken by a volume of the chart (%s); choose another" $i $vol.name (join ", " $chartVolumes)) -}}
{{- end -}}
{{- end -}}
{{- range $stage := list "classifyCpu" "classifyGpu" "aggregate" "alerts" "notify" -}}
{{- $sv := index $.Values $stage -}}
{{- $names := $chartVolumes -}}
{{- range $i, $vol := ($sv.extraVolumes | default list) -}}
{{- if has $vol.name $chartVolumes -}}
{{- $messages = append $messages (printf "%s.extraVolumes[%d]: the name %s is taken by a volume of the chart (%s); choose another" $stage $i $vol.name (join ", " $chartVolumes)) -}}
{{- end -}}
{{- end -}}
{{- range $vol := concat ($.Values.extraVolumes | default list) ($sv.extraVolumes | default list) -}}
{{- $names = append $names $vol.name -}}
{{- end -}}
{{- range $mount := concat ($.Values.extraVolumeMounts | default list) ($sv.extraVolumeMounts | default list) -}}
{{- if not (has $mount.name $names) -}}
{{- $messages = append $messages (printf "%s: extraVolumeMounts mounts volume %v at %v, but neither extraVolumes nor %s.extraVolumes has a volume of that name" $stage $mount.name $mount.mountPath $stage) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $line := splitList "\n" (include "newswatch.inlineSecrets" .) -}}
{{- if $line -}}
{{- $messages = append $messages $line -}}
{{- end -}}
{{- end -}}
{{- $allowInsecure := (default dict .Values.config.notify).webhook_allow_insecure -}}
{{- range $i, $url := .Values.secrets.webhookUrls -}}
{{- if not (or (hasPrefix "https://" $url) $allowInsecure) -}}
{{- $messages = append $messages (printf "secrets.webhookUrls[%d]: webhook URLs must start with https:// (or set config.notify.webhook_allow_insecure: true for a plain-http receiver)" $i) -}}
{{- end -}}
{{- end -}}
{{- if $messages -}}
{{- printf "\nVALUES VALIDATION:\n%s" (join "\n" $messages) | fail -}}
{{- end -}}
{{- end -}}

{{/* Non-fatal advice printed by NOTES.txt. */}}
{{- define "newswatch.warnings" -}}
{{- if or (eq .Values.image.registry "localhost") (and .Values.classifyGpu.enabled (eq .Values.gpuImage.registry "localhost")) }}
WARNING: the image is {{ include "newswatch.image" . }}, the name `make image` gives a local build; nodes can run it only if it is loaded on them (kind load, k3s ctr images import). Push it to a registry and set image.registry (and gpuImage.registry), see docs/deploy.md.
{{- end }}
{{- if and .Values.classifyGpu.enabled (eq .Values.model.source "image") (ne .Values.classifyGpu.variant "int8") }}
WARNING: classifyGpu uses the {{ .Values.classifyGpu.variant }} graph but model.source=image: the model baked into the stock image has the int8 graph only. Mount an exported model (model.source=volume, `newswatch export --variants fp16`) or use an image that adds it.
{{- end }}
{{- if .Values.broker.enabled }}
WARNING: the embedded broker keeps data in memory and is for trials only; use your own Kafka in production.
{{- end }}
{{- if and (ne .Values.autoscaling.mode "none") (gt (int .Values.autoscaling.maxReplicas) (int .Values.kafka.partitions)) }}
WARNING: autoscaling.maxReplicas ({{ .Values.autoscaling.maxReplicas }}) exceeds kafka.partitions ({{ .Values.kafka.partitions }}); replicas beyond the partition count get no work.
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.metrics.serviceMonitor.enabled (not (include "newswatch.metricsPeer" .)) (not .Values.networkPolicy.metricsFrom) }}
WARNING: the NetworkPolicies admit no scraper to the metrics port, so Prometheus cannot scrape the stages: set networkPolicy.metrics.namespaceSelector (and podSelector) to your Prometheus, see docs/deploy.md (Network policy).
{{- end }}
{{- range $kind := list "ServiceMonitor" "PrometheusRule" }}
{{- if and (index $.Values.metrics (untitle $kind)).enabled (ne (include "newswatch.monitoringApi" (dict "root" $ "kind" $kind)) "true") }}
WARNING: metrics.{{ untitle $kind }}.enabled is set but the cluster does not serve monitoring.coreos.com/v1/{{ $kind }} (no prometheus-operator CRDs), so no {{ $kind }} was rendered. Install the CRDs, or set metrics.{{ untitle $kind }}.force=true (helm template for a cluster that has them: add --api-versions monitoring.coreos.com/v1/{{ $kind }}); without the operator see docs/deploy.md (Monitoring without the Prometheus Operator).
{{- end }}
{{- end }}
{{- if and .Values.notify.enabled (ne (include "newswatch.notifyDeployed" .) "true") }}
WARNING: no alert sink configured (secrets.webhookUrls, secrets.existingSecret or config.notify.sinks), so the notifier is not deployed; alerts are kept on the alerts topic but not delivered.
{{- end }}
{{- end -}}
