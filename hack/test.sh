#!/usr/bin/env bash
# The whole test suite: formatting, lints, CRD drift, unit tests, and the integration
# tests on one test ground of real servers (nats-server, etcd, kube-apiserver,
# kube-controller-manager) started for this run on loopback.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
started=$SECONDS

ensure_packages
ensure_tools

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "building"
cargo build --workspace --all-targets --locked

step "tests on the test ground"
"$CARGO_TARGET_DIR/debug/jetway-testground" exec -- cargo test --workspace --locked -- "$@"

echo "all tests passed in $((SECONDS - started))s" >&2
