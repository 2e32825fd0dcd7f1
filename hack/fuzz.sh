#!/usr/bin/env bash
# Run every Fuzz* function of the main module for a fixed time each.
# Usage: hack/fuzz.sh 10s
# Fuzz targets are found by name in *_test.go files (one `go test -fuzz` per
# target, as go test allows only one at a time). Seed corpora in testdata/fuzz
# also run as normal tests in `go test ./...`.
set -euo pipefail
fuzztime=${1:-10s}
cd "$(dirname "$0")/.."

n=0
# Skip the separate build modules under hack/ and hidden folders.
while IFS= read -r f; do
  dir=./$(dirname "$f")
  for fn in $(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*\*testing\.F\).*/\1/p' "$f"); do
    echo "fuzz: $dir $fn for $fuzztime"
    go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" "$dir" </dev/null
    n=$((n + 1))
  done
done < <(find . -path ./hack -prune -o -path './.*' -prune -o -name '*_test.go' -print | sed 's|^\./||' | sort)
echo "fuzz: $n target(s) run"
