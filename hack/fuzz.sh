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
while read -r file name; do
  pkg="./$(dirname "$file")"
  echo "== $pkg $name ($fuzztime)"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"; then
    failed=1
  fi
done < <(grep -rHoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed -E 's/:func / /' | sed 's|^\./||' | sort)
exit "$failed"
