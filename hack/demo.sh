#!/usr/bin/env bash
# Runs inside `jetway-testground exec` (KUBECONFIG, JETWAY_NATS_URL and PATH set):
# installs the CRDs, starts the operator, applies examples/, shows what Kubernetes
# and JetStream then hold, and keeps the operator running until Ctrl-C.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${JETWAY_DEMO_PORT:-8080}
export JETWAY_METRICS_ADDR=127.0.0.1:$port

kubectl apply -f "$repo/crds/"
kubectl wait --for condition=Established crd --all --timeout=60s

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

kubectl apply -k "$repo/examples/"
kubectl wait --for condition=Ready streams.jetway.dev --all --timeout=60s

cat <<EOT

Jetway is running against a local control plane and nats-server.
  operator:   http://$JETWAY_METRICS_ADDR/metrics  (/healthz, /readyz)
  kubernetes: kubectl --kubeconfig $KUBECONFIG get jetway
  nats:       nats --server $JETWAY_NATS_URL stream ls
Press Ctrl-C to stop the operator and the servers.

What Kubernetes says (kubectl get streams.jetway.dev):
EOT
kubectl get streams.jetway.dev 2>&1 | sed 's/^/  /'
echo
echo "What JetStream has (nats stream ls):"
nats --server "$JETWAY_NATS_URL" stream ls 2>&1 | sed 's/^/  /'
wait $operator
