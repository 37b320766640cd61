#!/usr/bin/env bash
# Submit `hsp train` to a running Ray cluster with `ray job submit`.
#
# A KubeRay RayCluster (helm install hsp helm/hsp --set mode=cluster) keeps its dashboard
# inside the cluster; forward it first:
#   kubectl port-forward svc/hsp-head-svc 8265:8265 &
# then:   deploy/ray/submit-job.sh [extra hsp train flags]
# Environment: RAY_ADDRESS (default http://127.0.0.1:8265), HSP_CONFIG (a config file
# shipped with the job's working directory), HSP_STEPS, HSP_NUM_WORKERS.
set -euo pipefail

RAY_ADDRESS="${RAY_ADDRESS:-http://127.0.0.1:8265}"
HSP_CONFIG="${HSP_CONFIG:-cluster/configs/default.toml}"
HSP_STEPS="${HSP_STEPS:-200}"
HSP_NUM_WORKERS="${HSP_NUM_WORKERS:-2}"

# --working-dir uploads the config; the image already has hsp installed, so no pip in
# the runtime env. The driver binds its /metrics to the pod address (cluster-internal).
exec ray job submit \
  --address "${RAY_ADDRESS}" \
  --working-dir . \
  --submission-id "hsp-train-$(date +%Y%m%d-%H%M%S)" \
  -- hsp train --address auto --config "${HSP_CONFIG}" --steps "${HSP_STEPS}" \
     --num-workers "${HSP_NUM_WORKERS}" --metrics-port 9400 --metrics-host 0.0.0.0 \
     --run-dir /data/runs "$@"
