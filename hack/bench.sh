#!/usr/bin/env bash
# Relay benchmark: turnpike's relay vs coturn's turnserver, ChannelData at
# full speed from the same load generator to the same UDP peer, 100-byte and
# 1200-byte payloads. Prints packets/s, relay CPU time per relayed packet and
# turnpike's ratio to coturn (medians of several runs).
#
#   hack/bench.sh                      # defaults: 3 runs of 5 s per relay and size
#   hack/bench.sh -runs 5 -duration 10s -clients 4
#
# Needs coturn (Debian package coturn: turnserver). Results belong in
# docs/performance.md, with the machine they were measured on.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v turnserver >/dev/null; then
	echo "bench.sh: turnserver not found (apt-get install coturn)" >&2
	exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/turnpike" .
go build -o "$tmp/relaybench" ./hack/relaybench
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -sr)"
"$tmp/relaybench" -turnpike "$tmp/turnpike" -turnserver "$(command -v turnserver)" "$@"
