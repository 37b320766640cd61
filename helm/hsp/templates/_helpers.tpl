{{/* Names, labels and the pieces shared by RayJob and RayCluster. */}}

{{- define "hsp.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hsp.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hsp.labels" -}}
{{ include "hsp.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "hsp.monitoringLabels" -}}
{{ include "hsp.labels" . }}
{{- with .Values.monitoring.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "hsp.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "hsp.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Number of training ranks: explicit, or one per CPU worker pod / per GPU. */}}
{{- define "hsp.numWorkers" -}}
{{- if gt (int .Values.train.numWorkers) 0 -}}
{{- .Values.train.numWorkers -}}
{{- else -}}
{{- $n := 0 -}}
{{- range .Values.workerGroups -}}
{{- $n = add $n (mul (int .replicas) (max (int .gpusPerWorker) 1)) -}}
{{- end -}}
{{- $n -}}
{{- end -}}
{{- end -}}

{{/* The `hsp train` command line run by the RayJob (and suggested by NOTES for clusters). */}}
{{- define "hsp.trainCommand" -}}
hsp train --address auto --config /etc/hsp/config.yaml --steps {{ .Values.train.steps }} --num-workers {{ include "hsp.numWorkers" . }} --metrics-port {{ .Values.train.metricsPort }} --metrics-host 0.0.0.0 --run-dir {{ .Values.train.runDir }}
{{- if .Values.train.resume }} --resume{{ end }}
{{- range .Values.train.extraArgs }} {{ squote . }}{{ end }}
{{- end -}}

{{/* Volumes every Ray pod mounts: run config, shared memory, run directory. */}}
{{- define "hsp.volumes" -}}
- name: hsp-config
  configMap:
    name: {{ include "hsp.fullname" . }}-config
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shmSizeLimit }}
- name: runs
{{- if .Values.runsVolume.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.runsVolume.existingClaim }}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}

{{- define "hsp.volumeMounts" -}}
- name: hsp-config
  mountPath: /etc/hsp
  readOnly: true
- name: dshm
  mountPath: /dev/shm
- name: runs
  mountPath: {{ .Values.train.runDir }}
{{- end -}}

{{/* Pod-level fields shared by head and worker pods. Argument: (dict "root" $ "group" $group). */}}
{{- define "hsp.podCommon" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "hsp.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- with .group.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .group.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  {{- include "hsp.volumes" $root | nindent 2 }}
{{- end -}}

{{- define "hsp.podAnnotations" -}}
checksum/config: {{ toYaml .Values.train.config | sha256sum }}
{{- end -}}

{{- define "hsp.rayClusterSpec" -}}
rayVersion: {{ .Values.rayVersion | quote }}
enableInTreeAutoscaling: false
headGroupSpec:
  serviceType: {{ .Values.head.serviceType }}
  rayStartParams:
    dashboard-host: "0.0.0.0"
    metrics-export-port: {{ .Values.monitoring.rayMetricsPort | quote }}
    # The driver (hsp train) runs on the head; ranks go to worker pods.
    num-cpus: "0"
    {{- range $k, $v := .Values.head.rayStartParams }}
    {{ $k }}: {{ $v | quote }}
    {{- end }}
  template:
    metadata:
      labels:
        {{- include "hsp.selectorLabels" . | nindent 8 }}
        app.kubernetes.io/component: ray-head
      annotations:
        {{- include "hsp.podAnnotations" . | nindent 8 }}
    spec:
      {{- include "hsp.podCommon" (dict "root" . "group" .Values.head "tolerations" .Values.head.tolerations) | nindent 6 }}
      containers:
        - name: ray-head
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          securityContext:
            {{- toYaml .Values.securityContext | nindent 12 }}
          resources:
            {{- toYaml .Values.head.resources | nindent 12 }}
          ports:
            - {name: gcs-server, containerPort: 6379, protocol: TCP}
            - {name: dashboard, containerPort: 8265, protocol: TCP}
            - {name: client, containerPort: 10001, protocol: TCP}
            - {name: metrics, containerPort: {{ .Values.monitoring.rayMetricsPort }}, protocol: TCP}
            - {name: hsp-metrics, containerPort: {{ .Values.train.metricsPort }}, protocol: TCP}
          volumeMounts:
            {{- include "hsp.volumeMounts" . | nindent 12 }}
workerGroupSpecs:
{{- range .Values.workerGroups }}
{{- $gpu := int .gpusPerWorker }}
{{- $tolerations := default (list) .tolerations }}
{{- if gt $gpu 0 }}
{{- $tolerations = append $tolerations (dict "key" "nvidia.com/gpu" "operator" "Exists" "effect" "NoSchedule") }}
{{- end }}
  - groupName: {{ .name }}
    replicas: {{ .replicas }}
    minReplicas: {{ ternary .minReplicas .replicas (hasKey . "minReplicas") }}
    maxReplicas: {{ ternary .maxReplicas .replicas (hasKey . "maxReplicas") }}
    rayStartParams:
      metrics-export-port: {{ $.Values.monitoring.rayMetricsPort | quote }}
      {{- if gt $gpu 0 }}
      num-gpus: {{ $gpu | quote }}
      {{- end }}
      {{- range $k, $v := .rayStartParams }}
      {{ $k }}: {{ $v | quote }}
      {{- end }}
    template:
      metadata:
        labels:
          {{- include "hsp.selectorLabels" $ | nindent 10 }}
          app.kubernetes.io/component: ray-worker
        annotations:
          {{- include "hsp.podAnnotations" $ | nindent 10 }}
      spec:
        {{- include "hsp.podCommon" (dict "root" $ "group" . "tolerations" $tolerations) | nindent 8 }}
        containers:
          - name: ray-worker
            image: "{{ $.Values.image.repository }}:{{ $.Values.image.tag }}"
            imagePullPolicy: {{ $.Values.image.pullPolicy }}
            securityContext:
              {{- toYaml $.Values.securityContext | nindent 14 }}
            resources:
              {{- $res := deepCopy (default (dict) .resources) }}
              {{- if gt $gpu 0 }}
              {{- $_ := set $res "limits" (merge (dict "nvidia.com/gpu" $gpu) (default (dict) $res.limits)) }}
              {{- $_ := set $res "requests" (merge (dict "nvidia.com/gpu" $gpu) (default (dict) $res.requests)) }}
              {{- end }}
              {{- toYaml $res | nindent 14 }}
            ports:
              - {name: metrics, containerPort: {{ $.Values.monitoring.rayMetricsPort }}, protocol: TCP}
            volumeMounts:
              {{- include "hsp.volumeMounts" $ | nindent 14 }}
{{- end }}
{{- end -}}
