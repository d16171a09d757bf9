#!/usr/bin/env bash
# Runs inside `jetway-testground exec` (KUBECONFIG, JETWAY_NATS_URL and PATH set):
# installs the CRDs, starts the operator, applies examples/, starts the order workers
# on the streams and consumers it declared, posts a few orders, shows what
# Kubernetes and JetStream then hold, and keeps everything running until Ctrl-C.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${JETWAY_DEMO_PORT:-8080}
export JETWAY_METRICS_ADDR=127.0.0.1:$port

kubectl apply -f "$repo/crds/"
kubectl wait --for condition=Established crd --all --timeout=60s

bin=$CARGO_TARGET_DIR/debug
"$bin/jetway" run &
operator=$!
pids=$operator
# Ctrl-C reaches every process from the terminal; a SIGTERM for this script is passed on.
trap 'wait $pids' INT
trap 'kill -TERM $pids 2>/dev/null; wait $pids' TERM

for _ in $(seq 1 300); do
  curl -fsS "http://$JETWAY_METRICS_ADDR/readyz" >/dev/null 2>&1 && break
  kill -0 $operator 2>/dev/null || { echo "the operator exited" >&2; exit 1; }
  sleep 0.1
done

kubectl apply -k "$repo/examples/"
kubectl wait --for condition=Ready streams.jetway.dev --all --timeout=60s
kubectl wait --for condition=Ready consumers.jetway.dev --all --timeout=60s

# The order workers, as local processes on the consumers the operator created.
intake=127.0.0.1:$((port + 1))
JETWAY_HTTP_ADDR=$intake "$bin/jetway-intake" &
pids="$pids $!"
gateway=127.0.0.1:$((port + 5))
state=$(mktemp -d)
"$bin/jetway-gateway" --listen "$gateway" --state "$state/journal.jsonl" --latency 20ms &
pids="$pids $!"
JETWAY_HTTP_ADDR=127.0.0.1:$((port + 2)) "$bin/jetway-payment" --gateway-url "http://$gateway" &
pids="$pids $!"
JETWAY_HTTP_ADDR=127.0.0.1:$((port + 3)) "$bin/jetway-inventory" --seed-stock WIDGET=5,GADGET=100 &
pids="$pids $!"
JETWAY_HTTP_ADDR=127.0.0.1:$((port + 4)) "$bin/jetway-audit" &
pids="$pids $!"
for _ in $(seq 1 100); do
  curl -fsS "http://$intake/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "Posting 4 orders of 2 widgets each (5 in stock) to http://$intake/orders, then demo-1 again:"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
for n in 1 2 3 4 1; do
  body="{\"orderId\":\"demo-$n\",\"customerId\":\"c-$n\",\"currency\":\"EUR\",\"items\":[{\"sku\":\"WIDGET\",\"quantity\":2,\"unitPriceCents\":1250}]}"
  printf '  '; curl -sS -H 'content-type: application/json' -d "$body" "http://$intake/orders"; echo
done
printf '  without an orderId: '
curl -sS -H 'content-type: application/json' -d '{"customerId":"c-9","currency":"EUR","items":[]}' "http://$intake/orders"; echo
sleep 2

cat <<EOT

Jetway and the order pipeline are running against a local control plane and nats-server.
  operator:   http://$JETWAY_METRICS_ADDR/metrics  (/healthz, /readyz)
  intake:     curl -H 'content-type: application/json' -d @order.json http://$intake/orders
  workers:    http://127.0.0.1:$((port + 2))/metrics (payment), :$((port + 3)) (inventory), :$((port + 4)) (audit)
  gateway:    http://$gateway/stats (the payment provider simulator: charges per order)
  kubernetes: kubectl --kubeconfig $KUBECONFIG get jetway
  nats:       nats --server $JETWAY_NATS_URL stream ls
  audit:      $bin/jetway-audit replay --from $started
Press Ctrl-C to stop the workers, the operator and the servers.

What Kubernetes says (kubectl get streams.jetway.dev, consumers.jetway.dev):
EOT
kubectl get streams.jetway.dev 2>&1 | sed 's/^/  /'
kubectl get consumers.jetway.dev 2>&1 | sed 's/^/  /'
echo
echo "What JetStream has (nats stream ls):"
nats --server "$JETWAY_NATS_URL" stream ls 2>&1 | sed 's/^/  /'
echo
echo "What the payment gateway charged (GET http://$gateway/stats?detail=true):"
echo "  demo-3 and demo-4 found too few widgets: inventory rejected them and payment never charged them."
curl -sS "http://$gateway/stats?detail=true" | sed 's/^/  /'; echo
echo
echo "What audit recorded (jetway-audit replay --from $started):"
JETWAY_LOG=warn "$bin/jetway-audit" replay --from "$started" 2>&1 | sed 's/^/  /'
wait $pids
