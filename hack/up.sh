#!/usr/bin/env bash
# The main job on embedded defaults: a local Kubernetes control plane and nats-server,
# `jetway run` against them, the CRDs and examples applied, and what happened shown.
# Ctrl-C stops the operator and then the servers.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_packages
ensure_tools

step "building jetway and the order workers"
cargo build --locked --package jetway --package jetway-testground --package jetway-workers --bins

step "starting the test ground and the operator"
exec "$CARGO_TARGET_DIR/debug/jetway-testground" exec -- bash "$repo/hack/demo.sh"
