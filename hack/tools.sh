#!/usr/bin/env bash
# Builds the test ground's servers and tools from their pinned Go modules, once, into a
# cache keyed by version, and prints the directory that holds all of them.
#
#   JETWAY_TOOLS_CACHE   where builds are kept (default: ~/.cache/jetway/tools)
#   KUBEBUILDER_ASSETS   ready etcd, kube-apiserver and kubectl binaries to use instead
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools.env
source "$here/tools.env"
cache=${JETWAY_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jetway/tools}
mkdir -p "$cache"

log() { echo "tools: $*" >&2; }

# build NAME VERSION CMD... : runs CMD with $out set to the binary's cached path,
# unless that path already holds a binary.
build() {
  local name=$1 version=$2; shift 2
  out=$cache/$name/$version/$name
  if [ -x "$out" ]; then return; fi
  log "building $name $version (once; cached in $cache)"
  local started=$SECONDS
  mkdir -p "$(dirname "$out")"
  "$@"
  log "built $name $version in $((SECONDS - started))s"
}

go_install() { # MODULE_PATH@VERSION BINARY_NAME
  local gobin
  gobin=$(mktemp -d)
  GOBIN=$gobin CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' "$1"
  mv "$gobin/$2" "$out.tmp" && mv "$out.tmp" "$out"
  rm -rf "$gobin"
}

module_build() { # DIR_UNDER_tools PACKAGE [LDFLAGS]
  (cd "$here/tools/$1" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w ${3:-}" -o "$out.tmp" "$2")
  mv "$out.tmp" "$out"
}

# What Kubernetes' own release build stamps in, so that the apiserver reports its
# version to clients (kubectl, helm's kubeVersion checks) instead of v0.0.0-master.
k8s_version_ldflags() {
  local v=$KUBERNETES_VERSION minor
  minor=${v#v*.}; minor=${minor%%.*}
  local flags=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  echo "$flags"
}

required_version() { # DIR_UNDER_tools MODULE
  awk -v m="$2" '$1 == "require" && $2 == m { print $3 } $1 == m { print $2 }' "$here/tools/$1/go.mod" | head -n1
}

command -v go >/dev/null || { log "go is required to build the test servers"; exit 1; }
ETCD_VERSION=$(required_version etcd go.etcd.io/etcd/server/v3)
KUBERNETES_VERSION=$(required_version k8s k8s.io/kubernetes)
JAEGER_VERSION=$(required_version jaeger github.com/jaegertracing/jaeger)

set_dir=$cache/sets/$(cat "$here/tools.env" "$here"/tools/*/go.mod "$here"/tools/jwt/main.go | sha256sum | cut -c1-16)${KUBEBUILDER_ASSETS:+-assets}
mkdir -p "$set_dir"
link() { ln -sfn "$1" "$set_dir/$2"; }

build nats-server "$NATS_SERVER_VERSION" go_install "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION" nats-server
link "$out" nats-server

if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ] && [ -x "$KUBEBUILDER_ASSETS/etcd" ]; then
  log "using etcd and kube-apiserver from KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  link "$KUBEBUILDER_ASSETS/etcd" etcd
  link "$KUBEBUILDER_ASSETS/kube-apiserver" kube-apiserver
  [ -x "$KUBEBUILDER_ASSETS/kubectl" ] && link "$KUBEBUILDER_ASSETS/kubectl" kubectl
else
  build etcd "$ETCD_VERSION" module_build etcd go.etcd.io/etcd/server/v3
  link "$out" etcd
  build kube-apiserver "$KUBERNETES_VERSION" module_build k8s k8s.io/kubernetes/cmd/kube-apiserver "$(k8s_version_ldflags)"
  link "$out" kube-apiserver
fi
build kube-controller-manager "$KUBERNETES_VERSION" module_build k8s k8s.io/kubernetes/cmd/kube-controller-manager "$(k8s_version_ldflags)"
link "$out" kube-controller-manager
if [ ! -e "$set_dir/kubectl" ]; then
  build kubectl "$KUBERNETES_VERSION" module_build k8s k8s.io/kubernetes/cmd/kubectl "$(k8s_version_ldflags)"
  link "$out" kubectl
fi
build nats "$NATS_CLI_VERSION" go_install "github.com/nats-io/natscli/nats@$NATS_CLI_VERSION" nats
link "$out" nats
build helm "$HELM_VERSION" go_install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" helm
link "$out" helm
build jaeger "$JAEGER_VERSION" module_build jaeger github.com/jaegertracing/jaeger/cmd/jaeger
link "$out" jaeger
build glua "$GOPHER_LUA_VERSION" go_install "github.com/yuin/gopher-lua/cmd/glua@$GOPHER_LUA_VERSION" glua
link "$out" glua
# Our own small tool: keyed by its source, so an edit rebuilds it.
jwt_version=$(cat "$here"/tools/jwt/main.go "$here"/tools/jwt/go.mod | sha256sum | cut -c1-12)
build jetway-jwt "$jwt_version" module_build jwt jetway.dev/hack/tools/jwt
link "$out" jetway-jwt

echo "$set_dir"
