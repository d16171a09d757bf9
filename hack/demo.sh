#!/usr/bin/env bash
# Runs inside `jetway-testground exec` (KUBECONFIG, JETWAY_NATS_URL and PATH set):
# starts the operator, applies what the repo declares, shows the result, and keeps
# the operator running until Ctrl-C.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${JETWAY_DEMO_PORT:-8080}
export JETWAY_METRICS_ADDR=127.0.0.1:$port

"$CARGO_TARGET_DIR/debug/jetway" run &
operator=$!
# Ctrl-C reaches the operator from the terminal; a SIGTERM for this script is passed on.
trap 'wait $operator' INT
trap 'kill -TERM $operator 2>/dev/null; wait $operator' TERM

for _ in $(seq 1 300); do
  curl -fsS "http://$JETWAY_METRICS_ADDR/readyz" >/dev/null 2>&1 && break
  kill -0 $operator 2>/dev/null || { echo "the operator exited" >&2; exit 1; }
  sleep 0.1
done

shopt -s nullglob
crds=("$repo"/crds/*.yaml)
if [ ${#crds[@]} -gt 0 ]; then
  kubectl apply -f "$repo/crds/"
  kubectl wait --for condition=Established crd --all --timeout=60s
fi
if [ -f "$repo/examples/kustomization.yaml" ]; then
  kubectl apply -k "$repo/examples/"
fi

cat <<EOT

Jetway is running against a local control plane and nats-server.
  operator:   http://$JETWAY_METRICS_ADDR/metrics  (/healthz, /readyz)
  kubernetes: kubectl --kubeconfig $KUBECONFIG get crds
  nats:       nats --server $JETWAY_NATS_URL stream ls
Press Ctrl-C to stop the operator and the servers.

EOT
kubectl get crds 2>&1 | sed 's/^/  /'
nats --server "$JETWAY_NATS_URL" account info 2>&1 | sed -n '1,12p' | sed 's/^/  /'
wait $operator
