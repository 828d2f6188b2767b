#!/usr/bin/env bash
# Relay benchmark: turnpike's relay vs coturn's turnserver under the same
# load generator (hack/relaybench), in the same run, to the same UDP peer.
# As root it also measures "turnpike-ebpf", the default configuration of a
# relay pod: the relay as UID 65532 with no capability, fast path Auto, and
# the fast-path agent `turnpike fastpath` as root holding the program on lo
# (skipped otherwise, with a line saying so).
#
#   hack/bench.sh                 # the full matrix (about 15 minutes as root), then the one-core check
#   hack/bench.sh -runs 5 -duration 3s -allocs 100 -sizes 100 -rates max
#                                 # arguments replace the matrix run; no one-core check
#   hack/bench.sh -family 6 -allocs 100,10000 -sizes 100 -rates max   # IPv6 only
#   BASELINE=c7882c8 hack/bench.sh   # also measure turnpike built from that git
#                                 # revision, as "before", in the same run
#
# The matrix (IPv4): 1, 100 and 10,000 allocations; 100 and 1200-byte payloads;
# offered 100k and 200k packets/s, as fast as possible ("max") and twice
# what the relay delivered at max ("2x", the overload check). For each it
# prints delivered packets/s, loss, the relay process's CPU µs per packet,
# context switches per packet, the whole machine's CPU µs per packet (sys)
# and that minus a "direct" run's (the same sockets sending straight to the
# sink, no relay: the generator's and the sink's share) as the relay's own
# cost, p50/p99 latency through the relay, the ratios to coturn, and for
# turnpike-ebpf the share of packets its kernel program relayed; then
# allocation set-up rate and RSS per idle allocation, and the goals.
# Then IPv6 rows (-family 6: relays on ::1, the peer on a global IPv6
# address of the machine) at 100 and 10,000 allocations, 200k/s and max.
# The one-core check pins the relays to CPU 0 (taskset) at 200k packets/s;
# turnpike-ebpf's kernel work runs on the sender's CPU, which is not pinned.
# Last, as root, the fast path's program alone on the way a production relay
# takes (go test -bench Kernel ./relay/fastpath/: a route lookup per datagram,
# which relaying into lo skips).
#
# Needs coturn (Debian package coturn: turnserver) and, for 10,000
# allocations, root or a hard RLIMIT_NOFILE above 40,000 (relaybench raises
# its own limit, and the relays inherit it). Results belong in
# docs/performance.md, with the machine and the time they were measured.
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
echo "measured: $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg) before the run"
args=(-turnpike "$tmp/turnpike" -turnserver "$(command -v turnserver)")
if [ -n "${BASELINE:-}" ]; then
	mkdir "$tmp/base"
	git archive "$BASELINE" | tar -x -C "$tmp/base"
	(cd "$tmp/base" && go build -o "$tmp/turnpike-before" .)
	args+=(-baseline "$tmp/turnpike-before")
	echo "before: turnpike at $(git rev-parse --short "$BASELINE")"
fi
bench() { "$tmp/relaybench" "${args[@]}" "$@"; }
if [ $# -gt 0 ]; then
	bench "$@"
	exit
fi
bench -runs 3 -duration 2s -allocs 1,100,10000 -sizes 100,1200 -rates 100000,200000,max,2x
echo
if ip -6 addr show scope global 2>/dev/null | grep -q inet6; then
	echo "IPv6: relays on ::1, peer on this machine's first global IPv6 address"
	bench -family 6 -runs 3 -duration 2s -allocs 100,10000 -sizes 100,1200 -rates 200000,max
else
	echo "IPv6: skipped: this machine has no global IPv6 address for the peer"
fi
echo
echo "one core: the relays pinned to CPU 0, 200k packets/s of 100 B (turnpike-ebpf: its process; the fast path runs on the sender's CPU)"
bench -runs 3 -duration 2s -allocs 1,100 -sizes 100 -rates 200000,max -relay-cpus 0
if [ "$(id -u)" = 0 ]; then
	echo
	echo "the fast path on the way a production relay takes (namespaces joined by veth pairs, the program"
	echo "forwarding to a peer on another host with a route lookup, which the loopback rows above never make):"
	echo "its run time per datagram (kernel-ns/pkt), one at a time (Kernel) and round-robin over channels (KernelChannels;"
	echo "one datagram per system call, or 32 per sendmmsg as a driver hands them over: -batch32)"
	go test -run '^$' -bench '^BenchmarkKernel' -benchtime 200000x -count 3 ./relay/fastpath/ | grep -E '^Benchmark'
fi
