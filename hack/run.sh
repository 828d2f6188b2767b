#!/usr/bin/env bash
# make run: if the cluster of your kubeconfig answers, run the operator
# against it; otherwise start the playground: a local kube-apiserver and etcd
# (the ones the tests use) with the operator, the samples, and a relay on
# this machine (see hack/playground). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."

if hack/kubectl.sh version --request-timeout=3s >/dev/null 2>&1; then
  server=$(hack/kubectl.sh config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  echo "make run: the cluster at $server answers: running the operator against it (Ctrl-C stops it)"
  echo "make run: it needs the CRDs (make install) and creates relay DaemonSets with image \${RELAY_IMAGE:-turnpike:dev}"
  exec go run . operator --leader-elect=false
fi

echo "make run: no cluster answers (kubectl version failed): starting a local playground"
assets=$(hack/build-control-plane.sh)
# The operator runs from the image's own filesystem, as a cluster would run
# it: the image for this machine's platform only (make image builds both),
# unpacked, its user and entrypoint checked and its /turnpike started once.
platform=linux/$(go env GOARCH)
make --no-print-directory image PLATFORMS="$platform" IMAGE_DIR=bin/playground-image
go run ./hack/image unpack -layout bin/playground-image/oci -platform "$platform" -out bin/playground-image/rootfs
# Built, not `go run`: Ctrl-C and the exit status then reach the playground directly.
go build -o bin/turnpike-playground ./hack/playground
KUBEBUILDER_ASSETS=$assets exec bin/turnpike-playground --turnpike bin/playground-image/rootfs/turnpike "$@"
