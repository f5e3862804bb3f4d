#!/usr/bin/env bash
# Benchmark: a fourth node added to every group of a running whole stack in one `provision`. Boots
# a fresh 4-node lab (`hactl lab down` first), provisions the whole stack on node1-3, then puts
# node4 into every group of the inventory and provisions again while a writer on node1 inserts a
# row through the PostgreSQL LB (127.0.0.1:5000, TLS) every 0.5 s. Prints the first provision's
# time, the add's time and its changed steps, the writer's failed writes, the provision gate's
# smoke DAG line (which workers ran its tasks), whether the dag-processor's lease kept its holder
# and token, the membership of etcd, Patroni and a quorum queue afterwards, a re-run's changed
# count and time, and `verify`'s exit status. Needs root; targets only lab node addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
if [ -z "${HACTL:-}" ]; then
  cargo build --release -q
fi
hactl=${HACTL:-$PWD/target/release/hactl}
lab=/var/lib/hactl/lab
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node() {
  ssh -o BatchMode=yes -o UserKnownHostsFile="$lab/ssh/known_hosts" -i "$lab/ssh/id_ed25519" "root@10.213.0.1$1" "$2"
}

$hactl lab down >/dev/null
$hactl lab up --nodes 4 >/dev/null
inv=$work/inventory.yml
# The lab's inventory without node4 (its host entry and its line in each group).
awk '$0 == "    node4:" { skip = 1; next } skip && /ansible_host:/ { skip = 0; next } $0 == "        node4: {}" { next } { print }' \
  "$lab/inventory.yml" >"$inv"

# Provisions the inventory: its JSON in $work/$1.json and its seconds on stdout; fails on a failure.
provision() {
  local start end
  start=$(date +%s.%N)
  if ! $hactl provision "$inv" --output json >"$work/$1.json" 2>"$work/$1.err"; then
    jq -r '.results[] | select(.status == "failed") | "\(.host) \(.stage) \(.step): \(.error)"' "$work/$1.json" >&2
    exit 1
  fi
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }'
}

echo "first provision (node1-3, whole stack): $(provision first) s"
# The generated password (hactl's secrets file beside the inventory) goes to node1 on ssh's
# stdin, into a root-only file the writer reads: never on a command line.
awk -F': ' '$1 == "airflow_db_password" { gsub(/"/, "", $2); print $2 }' "$work/inventory.secrets.yml" |
  node 1 'umask 077; cat > /root/.bench-add-password'
holder_before=$(node 1 'hactl-guard status airflow-dag-processor' | grep -o 'held by [^;]*token [0-9]*')
conn="host=127.0.0.1 port=5000 user=airflow dbname=airflow sslmode=require"
node 1 "PGPASSWORD=\$(cat /root/.bench-add-password) psql '$conn' -qtAc 'create table if not exists bench_add(at timestamptz)'"
node 1 "systemd-run --unit=hactl-bench-writer --collect sh -c 'for i in \$(seq 600); do \
  if PGPASSWORD=\$(cat /root/.bench-add-password) timeout 3 psql \"$conn\" -qtAc \"insert into bench_add values (now())\" >/dev/null 2>&1; \
  then echo ok; else echo fail; fi; sleep 0.5; done > /root/bench-writer.log'" >/dev/null 2>&1

# node4 into every group (the lab's inventory); the secrets and the CA stay beside it.
cp "$lab/inventory.yml" "$inv"
echo "node4 added to every group: $(provision add) s, $(jq '.summary.changed' "$work/add.json") steps changed"
node 1 'systemctl stop hactl-bench-writer 2>/dev/null; sort /root/bench-writer.log | uniq -c' | sed 's/^/  writer through 5000: /'
jq -r '.results[] | select(.step | test("hactl_smoke triggered")) | "  smoke DAG: \(.summary)"' "$work/add.json"
holder_after=$(node 1 'hactl-guard status airflow-dag-processor' | grep -o 'held by [^;]*token [0-9]*')
echo "  dag-processor lease: before '$holder_before', after '$holder_after'"
node 4 'ETCDCTL_API=3 etcdctl --endpoints=https://10.213.0.14:2379 --cacert=/etc/hactl/tls/ca.crt --cert=/etc/hactl/tls/etcd-client.crt --key=/etc/hactl/tls/etcd-client.key member list' | sed 's/^/  etcd: /'
node 4 'patronictl -c /etc/patroni/config.yml list -f json' | jq -r '.[] | "  Patroni: \(.Member) \(.Role) \(.State)"'
node 4 'rabbitmqctl -q list_queues -p airflow name members | sed -n 2p' | sed 's/^/  a quorum queue: /'
echo "re-run: $(provision rerun) s, $(jq '.summary.changed' "$work/rerun.json") steps changed"
if $hactl verify "$inv" >/dev/null 2>&1; then echo "verify: passed"; else echo "verify: FAILED"; exit 1; fi
