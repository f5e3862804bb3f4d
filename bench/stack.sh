#!/usr/bin/env bash
# Benchmark: the whole stack (every stage through guard) on a fresh 3-node lab, every node in
# every group. Times the first provision (the lab's apt and pip caches are warm after any
# earlier lab run), then RUNS no-op re-runs (default 5) that reuse hactl's SSH masters (warm)
# and RUNS with none to reuse (cold: an empty XDG_RUNTIME_DIR, so every run opens its
# connections). Prints each run's wall time and summary line, and the medians; a re-run that
# changes anything or fails stops the benchmark. Also prints the CPU time the lab's nodes used
# during each re-run (what the run's checks cost them, plus the stack's own work, whose idle rate
# is measured first). Needs root; boots its own lab (`hactl lab down`
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

# CPU seconds used so far by the processes of the lab's nodes (user and system, with the exited
# children they reaped): a difference across a run is what the nodes spent meanwhile.
lab_cpu() {
  python3 - <<'PY'
import os

def pids():
    return [p for p in os.listdir("/proc") if p.isdigit()]

def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""

# The PID namespaces of the lab's nodes: those of the children of systemd-nspawn on a node's root.
spaces = set()
for pid in pids():
    argv = read(f"/proc/{pid}/cmdline").split(b"\0")
    if argv[0].endswith(b"systemd-nspawn") and any(a.startswith(b"--directory=/var/lib/hactl/lab/nodes/") for a in argv):
        for child in read(f"/proc/{pid}/task/{pid}/children").split():
            try:
                spaces.add(os.readlink(f"/proc/{child.decode()}/ns/pid"))
            except OSError:
                pass
hz, total = os.sysconf("SC_CLK_TCK"), 0
for pid in pids():
    try:
        if os.readlink(f"/proc/{pid}/ns/pid") not in spaces:
            continue
    except OSError:
        continue
    stat = read(f"/proc/{pid}/stat").decode()
    if stat:
        total += sum(int(x) for x in stat[stat.rindex(")") + 2 :].split()[11:15])
print(f"{total / hz:.2f}")
PY
}

# Runs a provision of the whole stack and prints its wall time and the lab's CPU time meanwhile, in
# seconds; on a failure (or, with $1 = no-op, any change) prints the run's last lines and fails.
timed_provision() {
  local start end summary cpu
  cpu=$(lab_cpu)
  start=$(date +%s.%N)
  if ! $hactl provision "$work/inventory.yml" >"$work/run.log" 2>&1; then
    echo "the provision failed:" >&2
    tail -30 "$work/run.log" >&2
    return 1
  fi
  end=$(date +%s.%N)
  cpu=$(awk -v a="$cpu" -v b="$(lab_cpu)" 'BEGIN { printf "%.2f", b - a }')
  summary=$(tail -1 "$work/run.log")
  if [ "$1" = no-op ] && [[ "$summary" != *" changed=0 "* ]]; then
    echo "a no-op re-run changed something: $summary" >&2
    grep -E '^\[|changed$' "$work/run.log" | head -20 >&2
    return 1
  fi
  awk -v a="$start" -v b="$end" -v c="$cpu" 'BEGIN { printf "%.2f %s\n", b - a, c }'
  echo "  $summary" >&2
}

# The median of the numbers on standard input.
median() {
  sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

out=$(timed_provision first)
read -r first _ <<<"$out"
echo "first provision of the whole stack: $first s"
sleep 30
idle=$(lab_cpu)
sleep 20
idle=$(awk -v a="$idle" -v b="$(lab_cpu)" 'BEGIN { printf "%.2f", (b - a) / 20 }')
echo "the idle stack: $idle CPU-seconds a second on the lab's nodes"

: >"$work/warm"
: >"$work/cpu"
for i in $(seq "$RUNS"); do
  out=$(timed_provision no-op)
  read -r t cpu <<<"$out"
  echo "no-op re-run $i (warm: SSH masters reused): $t s; the lab's nodes used $cpu CPU-s"
  echo "$t" >>"$work/warm"
  echo "$cpu" >>"$work/cpu"
done

: >"$work/cold"
for i in $(seq "$RUNS"); do
  mkdir -m 0700 "$work/runtime$i"
  out=$(XDG_RUNTIME_DIR="$work/runtime$i" timed_provision no-op)
  read -r t cpu <<<"$out"
  echo "no-op re-run $i (cold: no SSH master to reuse): $t s; the lab's nodes used $cpu CPU-s"
  echo "$t" >>"$work/cold"
done

warm=$(median <"$work/warm")
cold=$(median <"$work/cold")
cpu=$(median <"$work/cpu")
echo "first provision: $first s; no-op re-run, median of $RUNS: warm $warm s, cold $cold s ($(awk -v c="$cold" -v w="$warm" 'BEGIN { printf "%.2f", c / w }')x warm)"
echo "the lab's nodes during a warm no-op, median: $cpu CPU-s, of which the idle stack's about $(awk -v i="$idle" -v w="$warm" 'BEGIN { printf "%.2f", i * w }')"
