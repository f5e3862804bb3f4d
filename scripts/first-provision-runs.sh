#!/usr/bin/env bash
# Reliability of a first provision: RUNS times (default 10), a fresh 3-node lab and a first
# provision of STAGES (default base,etcd,postgres,pg-lb) on it. Prints each run's outcome and time
# and how many passed; exits 1 unless all did. Needs root; targets only lab node addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "$0 must run as root (the lab boots systemd-nspawn nodes)" >&2
  exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"
runs=${RUNS:-10}
stages=${STAGES:-base,etcd,postgres,pg-lb}
scripts/install-deps.sh
cargo build --release -q
hactl=$PWD/target/release/hactl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
for i in $(seq 1 "$runs"); do
  "$hactl" lab down >/dev/null
  "$hactl" lab up --nodes 3 >/dev/null
  rm -rf "$work/run"
  mkdir -p "$work/run"
  cp /var/lib/hactl/lab/inventory.yml "$work/run/inventory.yml"
  start=$(date +%s)
  if "$hactl" provision "$work/run/inventory.yml" --stages "$stages" >"$work/run/out" 2>&1; then
    passed=$((passed + 1))
    echo "run $i: passed in $(($(date +%s) - start)) s"
  else
    echo "run $i: FAILED after $(($(date +%s) - start)) s:"
    grep -E '^\[|failed|error' "$work/run/out" | tail -n 15
  fi
done
"$hactl" lab down >/dev/null
echo "first provision of $stages on fresh labs: $passed of $runs passed"
[ "$passed" -eq "$runs" ]
