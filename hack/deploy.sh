#!/usr/bin/env bash
# Usage: hack/deploy.sh IMAGE   (IMAGE with a tag: registry/turnpike:v0.1.0)
# Applies config/default with IMAGE as the operator image and, as in
# config/default, the relay image. A throwaway overlay sets the image, so
# config/default itself stays unchanged. It lives under bin/ because
# kustomize only accepts relative resource paths.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
image=${1:?usage: hack/deploy.sh IMAGE}
mkdir -p "$root/bin"
overlay=$(mktemp -d "$root/bin/deploy.XXXXXX")
trap 'rm -rf "$overlay"' EXIT
cat >"$overlay/kustomization.yaml" <<YAML
resources:
- ../../config/default
images:
- name: turnpike
  newName: ${image%:*}
  newTag: "${image##*:}"
# config/default copied the old image into RELAY_IMAGE; copy the new one.
replacements:
- source:
    kind: Deployment
    name: turnpike-operator
    fieldPath: spec.template.spec.containers.[name=operator].image
  targets:
  - select:
      kind: Deployment
      name: turnpike-operator
    fieldPaths:
    - spec.template.spec.containers.[name=operator].env.[name=RELAY_IMAGE].value
YAML
if [ "${DRY_RUN:-}" = 1 ]; then
  "$root/hack/kubectl.sh" kustomize "$overlay"
  exit
fi
"$root/hack/kubectl.sh" apply -k "$overlay"
