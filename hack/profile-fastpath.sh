#!/usr/bin/env bash
# Where the fast path's TC program spends its time. Runs one of the fast
# path's kernel benchmarks (relay/fastpath/bench_test.go) under a
# system-wide sampling profile, and prints, of the samples inside the
# program (bpf_prog_…_turnrelay) and the kernel functions it calls, the
# share of each function it calls and of its own instructions, and those
# instructions by source line (hack/bpflines).
#
#   hack/profile-fastpath.sh                                 # KernelChannels/IPv4/100: forwarding, with a route lookup
#   hack/profile-fastpath.sh 'KernelChannels/IPv6/10000$'    # round-robin over 10,000 IPv6 channels
#   BENCHTIME=1000000x hack/profile-fastpath.sh 'Kernel/IPv6/forward$'
#
# As root; needs perf (Debian package linux-perf). Without hardware
# counters (as in most VMs) perf samples on a timer, and a sample can only
# land where interrupts are enabled: read the shares as rough. The
# benchmark runs to its end (it removes its network namespaces then), so
# BENCHTIME must cover the warm-up and the profile: about 8 µs per
# datagram for KernelChannels, 15 µs for Kernel.
set -euo pipefail
cd "$(dirname "$0")/.."

bench=${1:-'KernelChannels/IPv4/100$'}
benchtime=${BENCHTIME:-3000000x}
warmup=${WARMUP:-10} # seconds: setting up 10,000 channels takes a few
seconds=${SECONDS_PROFILED:-8}

if [ "$(id -u)" != 0 ]; then
	echo "profile-fastpath.sh: needs root (the benchmark loads the program; perf records the kernel)" >&2
	exit 1
fi
if ! command -v perf >/dev/null; then
	echo "profile-fastpath.sh: perf not found (apt-get install linux-perf)" >&2
	exit 1
fi
tmp=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT
pid=""
go test -c -o "$tmp/fastpath.test" ./relay/fastpath/
go build -o "$tmp/bpflines" ./hack/bpflines
"$tmp/fastpath.test" -test.run '^$' -test.bench "^Benchmark$bench" -test.benchtime "$benchtime" >"$tmp/bench.txt" 2>&1 &
pid=$!
sleep "$warmup"
if ! kill -0 "$pid" 2>/dev/null; then
	echo "profile-fastpath.sh: the benchmark ended before the profile started; raise BENCHTIME:" >&2
	cat "$tmp/bench.txt" >&2
	exit 1
fi
# Where each source line's code lies in the program the benchmark runs now.
"$tmp/bpflines" turnrelay >"$tmp/lines.txt"
perf record -q -a -g -F 2000 -o "$tmp/perf.data" -- sleep "$seconds"
running=0
kill -0 "$pid" 2>/dev/null && running=1
wait "$pid" || { pid=""; cat "$tmp/bench.txt" >&2; exit 1; }
pid=""
grep -E '^Benchmark' "$tmp/bench.txt"
[ "$running" = 1 ] || echo "(the benchmark ended during the profile: raise BENCHTIME for a whole one)"

# perf script prints a sample as a header line and its call chain, leaf
# first, one frame per line ("address symbol"), then a blank line. The
# frame just below the program's is the function it called; a sample whose
# leaf is the program is its own.
perf script -i "$tmp/perf.data" -F comm,ip,sym 2>/dev/null | awk '
	BEGIN { RS = ""; FS = "\n" }
	{
		callee = ""
		for (i = 2; i <= NF; i++) {
			split($i, f, " ")
			if (f[2] ~ /_turnrelay$/) {
				if (i == 2) {
					callee = "(the program itself)"
				} else {
					split($(i - 1), g, " ")
					callee = g[2]
				}
				break
			}
		}
		if (callee != "") { n[callee]++; total++ }
	}
	END {
		if (total == 0) { print "no sample inside the program"; exit 1 }
		printf "%d samples inside the program and what it calls:\n", total
		for (c in n) printf "%6.1f %%  %s\n", 100 * n[c] / total, c | "sort -rn"
	}'

# The samples of the program's own instructions (the leaf frame: -G), by
# source line: perf names a sample's place as sym+offset, and a line's code runs from its
# offset in lines.txt to the next line's. The line of a stalled load gets
# the samples of the wait (a cache miss shows as its line).
perf script -G -i "$tmp/perf.data" -F ip,sym,symoff 2>/dev/null |
	awk '$2 ~ /_turnrelay\+0x/ { sub(/.*\+0x/, "", $2); print $2 }' >"$tmp/offsets.txt"
awk -F '\t' '
	function hex(s,   i, v) { v = 0; s = tolower(s); for (i = 1; i <= length(s); i++) v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1; return v }
	FNR == NR { if (/^#/) next; n++; start[n] = hex($1); line[n] = $2; text[$2] = substr($3, 1, 80); next }
	{
		o = hex($1); lo = 1; hi = n; at = 0
		while (lo <= hi) { mid = int((lo + hi) / 2); if (start[mid] <= o) { at = mid; lo = mid + 1 } else hi = mid - 1 }
		if (at) { count[line[at]]++; total++ }
	}
	END {
		if (total == 0) { print "no sample of the program'\''s own instructions"; exit }
		printf "\n%d samples of the program'\''s own instructions, by line of relay/fastpath/turnrelay.c (the first 15):\n", total
		for (l in count) printf "%6.1f %%  %5s  %s\n", 100 * count[l] / total, l == 0 ? "-" : l, l == 0 ? "(code the compiler gave no line)" : text[l] | "sort -rn | head -15"
	}' "$tmp/lines.txt" "$tmp/offsets.txt"
