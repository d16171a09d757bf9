# Shared by hack/test.sh and hack/up.sh: install what a fresh machine lacks, build the
# pinned test servers, and keep cargo's build output where the next run finds it.
# shellcheck shell=bash

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

step() { printf '\n==> %s\n' "$*" >&2; }

# Debian packages the scripts and tests call; installed only when missing.
ensure_packages() {
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v go >/dev/null || missing+=(golang-go)
  command -v cc >/dev/null || missing+=(build-essential)
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]}"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"
  fi
  command -v cargo >/dev/null || { echo "cargo is required: install Rust with rustup" >&2; exit 1; }
}

# cargo's target directory outlives a fresh clone, so a second run rebuilds nothing.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jetway/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-auto}
# Incremental data only pays off in an edit-compile loop; for the scripts it is a
# fresh copy per changed source, which is what once filled the disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
if [ "$CARGO_INCREMENTAL" = 0 ]; then
  rm -rf "$CARGO_TARGET_DIR"/debug/incremental "$CARGO_TARGET_DIR"/release/incremental
fi
# Each dependency or feature change leaves the old artifacts behind; past a bound the
# cache costs more disk than the rebuild costs time.
if [ -d "$CARGO_TARGET_DIR" ]; then
  target_gb=$(du -s --block-size=1G "$CARGO_TARGET_DIR" 2>/dev/null | cut -f1)
  if [ "${target_gb:-0}" -gt "${JETWAY_TARGET_MAX_GB:-40}" ]; then
    echo "the cargo target $CARGO_TARGET_DIR holds ${target_gb} GB; removing it (a full rebuild follows)" >&2
    rm -rf "$CARGO_TARGET_DIR"
  fi
fi

ensure_tools() {
  step "test servers and tools (built once from pinned Go modules, then cached)"
  JETWAY_TOOLS_DIR=$(bash "$repo/hack/tools.sh")
  export JETWAY_TOOLS_DIR
  echo "tools in $JETWAY_TOOLS_DIR" >&2
}
