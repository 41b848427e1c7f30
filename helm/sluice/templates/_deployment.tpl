{{/*
The Deployment of a component; the gateway and ingest differ only in their settings.
Args: (list $ "gateway" <terminationGracePeriodSeconds> <replicas or "">).
*/}}
{{- define "sluice.deployment" -}}
{{- $root := index . 0 }}{{ $component := index . 1 }}
{{- $grace := index . 2 }}{{ $replicas := index . 3 }}
{{- $c := index $root.Values $component }}
{{- $ctx := list $root $component }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "sluice.componentName" $ctx }}
  labels:
    {{- include "sluice.componentLabels" $ctx | nindent 4 }}
spec:
  {{- if ne (toString $replicas) "" }}
  replicas: {{ $replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "sluice.selectorLabels" $ctx | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # Never below the wanted capacity: a new pod is ready before an old one starts draining.
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      annotations:
        # Rolls the pods when their configuration changes.
        checksum/config: {{ include (printf "sluice.%s.configData" $component) $root | sha256sum }}
        {{- with $c.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      labels:
        {{- include "sluice.selectorLabels" $ctx | nindent 8 }}
        {{- include "sluice.componentLabels" $ctx | nindent 8 }}
        {{- with $c.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "sluice.serviceAccountName" $root }}
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $grace }}
      containers:
        - name: {{ $component }}
          image: {{ include "sluice.image" (list $c $root) | quote }}
          imagePullPolicy: {{ $c.image.pullPolicy }}
          envFrom:
            - configMapRef:
                name: {{ include "sluice.componentName" $ctx }}
          ports:
            - name: http
              containerPort: {{ $c.httpPort }}
              protocol: TCP
            - name: admin
              containerPort: {{ $c.adminPort }}
              protocol: TCP
          readinessProbe:
            httpGet:
              path: /readyz
              port: admin
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 2
          livenessProbe:
            httpGet:
              path: /healthz
              port: admin
            initialDelaySeconds: 10
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          {{- if gt (int $c.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              # Kubernetes' own sleep (1.30+): the image needs no shell or `sleep` binary. The pod
              # keeps serving while endpoints and the ingress forget it; SIGTERM comes after.
              sleep:
                seconds: {{ $c.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          {{- with (printf "%s\n%s" (include "sluice.kafkaVolumeMounts" $ctx) (include "sluice.authVolumeMounts" $root) | trim) }}
          volumeMounts:
            {{- . | nindent 12 }}
          {{- end }}
      {{- with (printf "%s\n%s" (include "sluice.kafkaVolumes" $ctx) (include "sluice.authVolumes" $root) | trim) }}
      volumes:
        {{- . | nindent 8 }}
      {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- $affinity := deepCopy $c.affinity }}
      {{- if $c.podAntiAffinity }}
      {{- $term := dict "weight" 100 "podAffinityTerm" (dict "topologyKey" "kubernetes.io/hostname" "labelSelector" (dict "matchLabels" (include "sluice.selectorLabels" $ctx | fromYaml))) }}
      {{- $_ := set $affinity "podAntiAffinity" (dict "preferredDuringSchedulingIgnoredDuringExecution" (list $term)) }}
      {{- end }}
      {{- with $affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $c.topologySpread.enabled }}
      topologySpreadConstraints:
        {{- range (default (list "kubernetes.io/hostname") $c.topologySpread.topologyKeys) }}
        - topologyKey: {{ . }}
          maxSkew: {{ default 1 $c.topologySpread.maxSkew }}
          whenUnsatisfiable: {{ default "ScheduleAnyway" $c.topologySpread.whenUnsatisfiable }}
          # Spread each rollout's new pods too, not just the sum of old and new.
          matchLabelKeys:
            - pod-template-hash
          labelSelector:
            matchLabels:
              {{- include "sluice.selectorLabels" $ctx | nindent 14 }}
        {{- end }}
      {{- end }}
{{- end }}
