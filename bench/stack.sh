#!/usr/bin/env bash
# Benchmark: the whole stack (every stage through guard) on a fresh 3-node lab, every node in
# every group. Times the first provision (the lab's apt and pip caches are warm after any
# earlier lab run), then RUNS no-op re-runs (default 5) that reuse hactl's SSH masters (warm)
# and RUNS with none to reuse (cold: an empty XDG_RUNTIME_DIR, so every run opens its
# connections). Prints each run's wall time and summary line, and the medians; a re-run that
# changes anything or fails stops the benchmark. Needs root; boots its own lab (`hactl lab down`
# first) and targets only lab node addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RUNS=${RUNS:-5}
if [ -z "${HACTL:-}" ]; then
  cargo build --release -q
fi
hactl=${HACTL:-$PWD/target/release/hactl}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

$hactl lab down >/dev/null
$hactl lab up --nodes 3 >/dev/null
cp /var/lib/hactl/lab/inventory.yml "$work/inventory.yml"

# Runs a provision of the whole stack and prints its wall time in seconds; on a failure (or, with
# $1 = no-op, any change) prints the run's last lines and fails.
timed_provision() {
  local start end summary
  start=$(date +%s.%N)
  if ! $hactl provision "$work/inventory.yml" >"$work/run.log" 2>&1; then
    echo "the provision failed:" >&2
    tail -30 "$work/run.log" >&2
    return 1
  fi
  end=$(date +%s.%N)
  summary=$(tail -1 "$work/run.log")
  if [ "$1" = no-op ] && [[ "$summary" != *" changed=0 "* ]]; then
    echo "a no-op re-run changed something: $summary" >&2
    grep -E '^\[|changed$' "$work/run.log" | head -20 >&2
    return 1
  fi
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f\n", b - a }'
  echo "  $summary" >&2
}

# The median of the numbers on standard input.
median() {
  sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

first=$(timed_provision first)
echo "first provision of the whole stack: $first s"

: >"$work/warm"
for i in $(seq "$RUNS"); do
  t=$(timed_provision no-op)
  echo "no-op re-run $i (warm: SSH masters reused): $t s"
  echo "$t" >>"$work/warm"
done

: >"$work/cold"
for i in $(seq "$RUNS"); do
  mkdir -m 0700 "$work/runtime$i"
  t=$(XDG_RUNTIME_DIR="$work/runtime$i" timed_provision no-op)
  echo "no-op re-run $i (cold: no SSH master to reuse): $t s"
  echo "$t" >>"$work/cold"
done

warm=$(median <"$work/warm")
cold=$(median <"$work/cold")
echo "first provision: $first s; no-op re-run, median of $RUNS: warm $warm s, cold $cold s ($(awk -v c="$cold" -v w="$warm" 'BEGIN { printf "%.2f", c / w }')x warm)"
