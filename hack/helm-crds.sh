#!/usr/bin/env bash
# Copies what `make manifests` generates into the Helm chart: the CRDs
# (rendered by charts/turnpike/templates/crds.yaml, so upgrades update them)
# and the operator's ClusterRole (its rules are rendered by templates/rbac.yaml).
# test/install fails when the chart's copies differ from config/.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/turnpike/files
rm -f "$chart"/crds/*.yaml
cp config/crd/bases/*.yaml "$chart/crds/"
cp config/rbac/role.yaml "$chart/rbac/role.yaml"
