#!/usr/bin/env bash
# kubectl for the Makefile: the one on PATH, else the one hack/build-control-plane.sh
# builds into bin/k8s/<version>/ (built on first use).
set -euo pipefail
if command -v kubectl >/dev/null 2>&1; then
  exec kubectl "$@"
fi
root=$(cd "$(dirname "$0")/.." && pwd)
found=$(ls "$root"/bin/k8s/*/kubectl 2>/dev/null | sort | tail -n 1 || true)
if [ -z "$found" ]; then
  found="$("$root/hack/build-control-plane.sh")/kubectl"
fi
exec "$found" "$@"
