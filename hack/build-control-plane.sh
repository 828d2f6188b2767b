#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kubectl and etcd from the Go
# module proxy into bin/k8s/<version>/, the layout envtest expects for
# KUBEBUILDER_ASSETS. Nothing is downloaded from anywhere but the module proxy.
# A binary that already exists is kept, so a second run costs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# The version a go.mod requires, in either `require m v` or block form.
required() { awk -v m="$2" '{ for (i = 1; i < NF; i++) if ($i == m) { print $(i + 1); exit } }' "$1"; }
k8s_version=$(required hack/tools/k8s/go.mod k8s.io/kubernetes)
etcd_version=$(required hack/tools/etcd/go.mod go.etcd.io/etcd/server/v3)
dest=$root/bin/k8s/$k8s_version-etcd-$etcd_version
mkdir -p "$dest"

# k8s.io/kubernetes and k8s.io/controller-manager are missing from the checksum
# database; skip it for those paths only. go.sum still pins them.
export GONOSUMDB=k8s.io/kubernetes,k8s.io/controller-manager
export CGO_ENABLED=0

build() { # module-dir output package
  if [ -x "$dest/$2" ]; then return; fi
  echo "building $2 ($3)" >&2
  (cd "hack/tools/$1" && go build -trimpath -ldflags='-s -w' -o "$dest/$2.tmp" "$3")
  mv "$dest/$2.tmp" "$dest/$2"
}

build k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build etcd etcd go.etcd.io/etcd/server/v3
build k8s kubectl k8s.io/kubernetes/cmd/kubectl
if [ "${WITH_CONTROLLER_MANAGER:-0}" = 1 ]; then
  build k8s kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
fi
echo "$dest"
