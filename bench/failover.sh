#!/usr/bin/env bash
# Benchmark: hard-crash failover of the PostgreSQL leader on a fresh 3-node lab (stages base…pg-lb).
# CRASHES times (default 5): a writer on a surviving node writes through HAProxy's primary port
# (5000) every 0.2 s; the leader's machine is crashed (`hactl lab kill`: every process killed at
# once); the figure is the time from the crash to the writer's first successful write after its
# first failure. The machine is started again and `verify` must pass before the next crash.
# Then LOAD_SECONDS (default 300) with every CPU of the machine busy inside the leader's node: the
# leader and its timeline must not change (no spurious failover), and the writer's failures are
# counted. Prints each figure, the median and the load result. Needs root; boots its own lab
# (`hactl lab down` first) and targets only lab node addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
CRASHES=${CRASHES:-5}
LOAD_SECONDS=${LOAD_SECONDS:-300}
if [ -z "${HACTL:-}" ]; then
  cargo build --release -q
fi
hactl=${HACTL:-$PWD/target/release/hactl}
lab=/var/lib/hactl/lab
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

$hactl lab down >/dev/null
$hactl lab up --nodes 3 >/dev/null
cp "$lab/inventory.yml" "$work/inventory.yml"
inv=$work/inventory.yml
if ! $hactl provision "$inv" --stages base,etcd,postgres,pg-lb >"$work/provision.log" 2>&1; then
  tail -40 "$work/provision.log"
  exit 1
fi

# The address of node N, from the lab's inventory.
addr() {
  grep -A1 "^    node$1:" "$inv" | awk '/ansible_host/ { gsub(/"/, "", $2); print $2 }'
}
# Runs a command on node N (the lab's key; a dead node fails within 5 s).
on() {
  local n=$1
  shift
  ssh -i "$lab/ssh/id_ed25519" -o UserKnownHostsFile="$lab/ssh/known_hosts" -o BatchMode=yes \
    -o ConnectTimeout=5 "root@$(addr "$n")" "$@"
}
# The Patroni leader's name and timeline, asked on node N.
leader_on() {
  on "$1" "patronictl -c /etc/patroni/config.yml list -f json 2>/dev/null | jq -r '.[] | select(.Role == \"Leader\") | \"\(.Member) \(.TL)\"'"
}
# Whether node N is etcd's leader.
etcd_leader() {
  on "$1" "ETCDCTL_API=3 etcdctl --endpoints=http://127.0.0.1:2379 endpoint status -w json | jq -e '.[0].Status.leader == .[0].Status.header.member_id' >/dev/null"
}
# Waits until verify passes (the cluster is whole again), at most 180 s.
settle() {
  local deadline=$((SECONDS + 180))
  until $hactl verify "$inv" --stages etcd,postgres,pg-lb >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "the cluster did not settle within 180 s" >&2
      exit 1
    fi
    sleep 2
  done
}
# Starts the writer on node N: one line per write, "EPOCH ok|fail".
start_writer() {
  on "$1" 'umask 077; cat > /root/.bench-pgpass' <<<"$password"
  on "$1" 'cat > /root/bench-writer.sh && chmod 700 /root/bench-writer.sh' <<'EOF'
#!/bin/sh
PGPASSWORD=$(cat /root/.bench-pgpass)
export PGPASSWORD
while :; do
  if timeout 2 psql -h 127.0.0.1 -p 5000 -U airflow -d airflow -qtAc 'insert into bench_t values (now())' >/dev/null 2>&1
  then echo "$(date +%s.%N) ok"
  else echo "$(date +%s.%N) fail"
  fi
  sleep 0.2
done
EOF
  on "$1" 'rm -f /root/bench-writer.log; systemd-run --quiet --unit=bench-writer --collect sh -c "/root/bench-writer.sh > /root/bench-writer.log"'
}
stop_writer() {
  on "$1" 'systemctl stop bench-writer 2>/dev/null; true'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

password=$(awk -F': ' '/^airflow_db_password:/ { gsub(/"/, "", $2); print $2 }' "$work/inventory.secrets.yml")
on 1 "PGPASSWORD=\$(cat) psql -h 127.0.0.1 -p 5000 -U airflow -d airflow -qtAc 'create table if not exists bench_t(at timestamptz)'" <<<"$password"

figures=()
for i in $(seq 1 "$CRASHES"); do
  read -r leader _ < <(leader_on 1)
  n=${leader#node}
  survivor=$((n % 3 + 1))
  start_writer "$survivor"
  also=""
  if etcd_leader "$n"; then
    also=" (etcd's leader too)"
  fi
  sleep 2
  crash=$(date +%s.%N)
  $hactl lab kill "$leader" >/dev/null
  took=""
  deadline=$((SECONDS + 90))
  while [ -z "$took" ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.5
    took=$(on "$survivor" 'cat /root/bench-writer.log' | awk -v c="$crash" '
      $1 > c && $2 == "fail" { failed = 1 }
      failed && $2 == "ok" { printf "%.1f", $1 - c; exit }')
  done
  stop_writer "$survivor"
  if [ -z "$took" ]; then
    echo "crash $i: $leader crashed, no write through 5000 succeeded within 90 s" >&2
    exit 1
  fi
  read -r new _ < <(leader_on "$survivor")
  echo "crash $i: leader $leader$also crashed -> $new writable through 5000 after $took s"
  figures+=("$took")
  $hactl lab up --nodes 3 >/dev/null
  settle
done
echo "hard-crash failover, median of $CRASHES: $(printf '%s\n' "${figures[@]}" | median) s"

read -r leader timeline < <(leader_on 1)
n=${leader#node}
survivor=$((n % 3 + 1))
start_writer "$survivor"
on "$n" "systemd-run --quiet --unit=bench-load --collect -p RuntimeMaxSec=$LOAD_SECONDS sh -c 'for i in \$(seq \$(nproc)); do (while :; do :; done) & done; wait'"
changes=0
end=$((SECONDS + LOAD_SECONDS))
while [ "$SECONDS" -lt "$end" ]; do
  sleep 5
  read -r now tl < <(leader_on "$survivor")
  if [ "$now" != "$leader" ] || [ "$tl" != "$timeline" ]; then
    changes=$((changes + 1))
    echo "under load: the leader is now $now (timeline $tl), was $leader ($timeline)"
    leader=$now
    timeline=$tl
  fi
done
on "$n" 'systemctl stop bench-load 2>/dev/null; true'
stop_writer "$survivor"
failed=$(on "$survivor" 'grep -c " fail$" /root/bench-writer.log || true')
total=$(on "$survivor" 'wc -l < /root/bench-writer.log')
echo "${LOAD_SECONDS} s with every CPU busy in the leader's node: $changes leader changes, $failed of $total writes failed"
[ "$changes" -eq 0 ]
