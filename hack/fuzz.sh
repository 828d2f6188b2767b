#!/usr/bin/env bash
# Runs every Go fuzz target of the module (func Fuzz... in a _test.go file)
# for FUZZTIME each (default 5s), one at a time, so the machine's cores go
# to one fuzzer. What a fuzzer finds interesting lands in Go's cache; a
# failing input is written to the package's testdata/fuzz/<Fuzz name>/,
# where it becomes a seed every `go test` runs: commit it with the fix.
#
#   make fuzz                  # 5s each
#   FUZZTIME=1m make fuzz      # longer
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-5s}"
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
while read -r file name; do
  pkg="./$(dirname "$file")"
  echo "== $pkg $name ($fuzztime)"
  corpus="$pkg/testdata/fuzz/$name"
  before=$(ls "$corpus" 2>/dev/null | wc -l || true)
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg" 2>&1 | tee "$log"; then
    after=$(ls "$corpus" 2>/dev/null | wc -l || true)
    # Go 1.26's fuzz coordinator can report its own -fuzztime deadline as a
    # failure (go.dev/issue/75804, fixed in Go 1.27): no input failed and
    # none was written. Any other failure, or a new input in the corpus
    # directory, fails the run.
    if [ "$after" = "$before" ] && grep -q '^    context deadline exceeded$' "$log" &&
      [ "$(grep -c -- '^--- FAIL' "$log")" = 1 ] && ! grep -q 'Failing input written' "$log"; then
      echo "== $name: the fuzz coordinator's deadline race (go.dev/issue/75804), no failing input: not a failure"
    else
      failed=1
    fi
  fi
done < <(grep -rHoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed -E 's/:func / /' | sed 's|^\./||' | sort)
exit "$failed"
