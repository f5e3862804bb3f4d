#!/usr/bin/env bash
# Benchmark: how hactl grows with the number of inventory hosts. For each count in SIZES
# (default 3 6 15 30), an inventory of that many hosts, given in turn the addresses of the lab's
# nodes (so 30 hosts are 10 inventory names per node, each with its own SSH master), runs a
# no-op re-run of a 47-step playbook whose paths are per inventory host; one step's probe waits
# 1 s (a guard command that sleeps), so a run whose hosts were handled one after another would
# take at least 1 s per host. Prints, per count, the
# median of RUNS runs (default 5): wall time, hactl's own CPU time (user + system) and its peak
# memory (RSS), and the same per host. Needs root and a lab (`hactl lab up`); targets only lab
# node addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
RUNS=${RUNS:-5}
SIZES=${SIZES:-3 6 15 30}
if [ -z "${HACTL:-}" ]; then
  cargo build --release -q
fi
hactl=${HACTL:-$PWD/target/release/hactl}
$hactl lab up --nodes 3 >/dev/null
lab=/var/lib/hactl/lab
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mapfile -t addresses < <(awk '/ansible_host:/ { gsub(/"/, "", $2); print $2 }' "$lab/inventory.yml")

{
  echo "stages:"
  echo "  - name: bench"
  echo "    hosts: all"
  echo "    steps:"
  echo "      - {name: base, directory: {path: \"/srv/scale/{{ inventory_hostname }}\"}}"
  echo "      - {name: a probe that takes 1 s, command: {cmd: \"true\", unless: \"sleep 1\"}}"
  for i in $(seq 1 15); do
    echo "      - {name: dir$i, directory: {path: \"/srv/scale/{{ inventory_hostname }}/d$i\", mode: \"0755\"}}"
    printf '%s\n' "      - {name: file$i, file: {path: \"/srv/scale/{{ inventory_hostname }}/d$i/f.conf\", content: \"key$i=value$i\\n\", mode: \"0644\"}}"
    echo "      - {name: line$i, lineinfile: {path: \"/srv/scale/{{ inventory_hostname }}/lines.conf\", line: \"opt$i=on\", create: true}}"
  done
} >"$work/scale.yml"

# An inventory of N hosts over the lab's nodes.
inventory() {
  local n=$1 i
  echo "all:"
  echo "  vars:"
  echo "    ansible_user: root"
  echo "    ansible_ssh_private_key_file: $lab/ssh/id_ed25519"
  echo "    hactl_known_hosts_file: $lab/ssh/known_hosts"
  echo "  hosts:"
  for i in $(seq 1 "$n"); do
    echo "    h$i:"
    echo "      ansible_host: \"${addresses[$(((i - 1) % ${#addresses[@]}))]}\""
  done
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

printf '%6s %9s %10s %9s %12s %14s\n' hosts wall_s cpu_s rss_mb cpu_ms/host rss_kb/host
for n in $SIZES; do
  inventory "$n" >"$work/inv-$n.yml"
  $hactl provision "$work/inv-$n.yml" -p "$work/scale.yml" --forks "$n" >/dev/null 2>&1
  changed=$($hactl provision "$work/inv-$n.yml" -p "$work/scale.yml" --forks "$n" --output json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["changed"])')
  if [ "$changed" != 0 ]; then
    echo "$n hosts: the re-run changed $changed steps" >&2
    exit 1
  fi
  : >"$work/times-$n"
  for _ in $(seq 1 "$RUNS"); do
    /usr/bin/time -f '%e %U %S %M' -a -o "$work/times-$n" \
      "$hactl" provision "$work/inv-$n.yml" -p "$work/scale.yml" --forks "$n" >/dev/null 2>&1
  done
  wall=$(awk '{print $1}' "$work/times-$n" | median)
  cpu=$(awk '{print $2 + $3}' "$work/times-$n" | median)
  rss=$(awk '{print $4}' "$work/times-$n" | median)
  printf '%6d %9.2f %10.3f %9.1f %12.1f %14.0f\n' "$n" "$wall" "$cpu" "$(echo "$rss / 1024" | bc -l)" \
    "$(echo "$cpu * 1000 / $n" | bc -l)" "$(echo "$rss / $n" | bc -l)"
done
