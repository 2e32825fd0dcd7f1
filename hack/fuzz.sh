#!/usr/bin/env bash
# Run every Fuzz* function of the main module for a fixed time each.
# Usage: hack/fuzz.sh 10s [target-regexp]
# Fuzz targets are found by name in *_test.go files (one `go test -fuzz` per
# target, as go test allows only one at a time). Seed corpora in testdata/fuzz
# also run as normal tests in `go test ./...`.
#
# Go 1.26's fuzz coordinator can report a bare "context deadline exceeded" at
# the end of -fuzztime with no failing input (golang/go#75804, fixed in Go
# 1.27). Such a run is repeated once; a target fails when an input made it
# fail (a new file under testdata/fuzz/<target>) or when it fails twice.
set -euo pipefail
fuzztime=${1:-10s}
match=${2:-.}
cd "$(dirname "$0")/.."

corpus_count() { find "$1/testdata/fuzz/$2" -type f 2>/dev/null | wc -l; }

run_one() { # dir fn
  local dir=$1 fn=$2 out rc before
  before=$(corpus_count "$dir" "$fn")
  out=$(mktemp)
  set +e
  go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime" "$dir" </dev/null 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ] && [ "$(corpus_count "$dir" "$fn")" -eq "$before" ] &&
    grep -q '^    context deadline exceeded$' "$out" && ! grep -q 'Failing input written' "$out"; then
    rm -f "$out"
    return 3
  fi
  rm -f "$out"
  return "$rc"
}

n=0
# Skip the separate build modules under hack/ and hidden folders.
while IFS= read -r f; do
  dir=./$(dirname "$f")
  for fn in $(sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\(.*\*testing\.F\).*/\1/p' "$f"); do
    [[ $fn =~ $match ]] || continue
    echo "fuzz: $dir $fn for $fuzztime"
    rc=0
    run_one "$dir" "$fn" || rc=$?
    if [ "$rc" -eq 3 ]; then
      echo "fuzz: $fn stopped with the coordinator's deadline error and no failing input; running it again"
      rc=0
      run_one "$dir" "$fn" || rc=$?
    fi
    if [ "$rc" -ne 0 ]; then
      echo "fuzz: $dir $fn FAILED" >&2
      exit 1
    fi
    n=$((n + 1))
  done
done < <(find . -path ./hack -prune -o -path './.*' -prune -o -name '*_test.go' -print | sed 's|^\./||' | sort)
echo "fuzz: $n target(s) run"
