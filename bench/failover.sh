#!/usr/bin/env bash
# Benchmark: hard crashes (`hactl lab kill`: every process of a node's machine killed at once) on a
# fresh 3-node lab, CRASHES times each (default 5), for each part in PARTS (default all three):
# - postgres (stages base…pg-lb): a writer on a surviving node writes through HAProxy's primary
#   port (5000) every 0.2 s; the Patroni leader's machine is crashed. Then LOAD_SECONDS (default
#   300) with every CPU of the machine busy inside the leader's node: the leader and its timeline
#   must not change (no spurious failover), and the writer's failures are counted.
# - rabbitmq (the whole stack: the publisher is kombu from Airflow's venv): a publisher on a
#   surviving node publishes a persistent message with publisher confirms, each on a new
#   connection through the mq LB over TLS (127.0.0.1:5674), into a quorum queue every 0.2 s; the machine of
#   the node that leads the queue is crashed.
# - web (the whole stack): a client on a surviving node asks the web LB's VIP (HTTPS, the CA) for the API's health
#   every 0.2 s; the machine holding the VIP (keepalived's master, with its api-server) is crashed.
# Each figure is the time from the crash to the first success after the first failure (0 when
# nothing failed), with the last failure's time after the crash; the machine is started again and
# `verify` must pass before the next crash. Prints each figure and the medians. Needs root; boots
# its own lab (`hactl lab down` first) and targets only lab node addresses.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
CRASHES=${CRASHES:-5}
PARTS=${PARTS:-postgres rabbitmq web}
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

# Provisions STAGES (comma-separated; empty: the whole stack), or prints the run's failures, keeps
# its output in /tmp/hactl-failover-provision.log and fails.
provision() {
  if ! $hactl provision "$inv" ${1:+--stages "$1"} >"$work/provision.log" 2>&1; then
    cp "$work/provision.log" /tmp/hactl-failover-provision.log
    grep -E '^ *(!|= .*: .*failed|stage )' "$work/provision.log" | tail -20
    tail -5 "$work/provision.log"
    echo "the whole output: /tmp/hactl-failover-provision.log" >&2
    exit 1
  fi
}
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
# A secret from the inventory's secrets file.
secret() {
  awk -F': ' -v k="$1" '$1 == k { gsub(/"/, "", $2); print $2 }' "$work/inventory.secrets.yml"
}
# The Patroni leader's name and timeline, asked on node N.
leader_on() {
  on "$1" "patronictl -c /etc/patroni/config.yml list -f json 2>/dev/null | jq -r '.[] | select(.Role == \"Leader\") | \"\(.Member) \(.TL)\"'"
}
# Whether node N is etcd's leader.
etcd_leader() {
  on "$1" "ETCDCTL_API=3 ETCDCTL_CACERT=/etc/hactl/tls/ca.crt ETCDCTL_CERT=/etc/hactl/tls/etcd-client.crt \
    ETCDCTL_KEY=/etc/hactl/tls/etcd-client.key etcdctl --endpoints=https://$(addr "$1"):2379 endpoint status -w json |
    jq -e '.[0].Status.leader == .[0].Status.header.member_id' >/dev/null"
}
# Waits until `verify` of STAGES passes (the cluster is whole again), at most 300 s.
settle() {
  local deadline=$((SECONDS + 300))
  until $hactl verify "$inv" --stages "$1" >"$work/verify.log" 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "the cluster did not settle within 300 s; the last verify said:" >&2
      grep -v '^  = ' "$work/verify.log" | tail -20 >&2
      exit 1
    fi
    sleep 2
  done
}
# Starts the client script on stdin on node N as unit bench-client: one line per attempt,
# "EPOCH ok|fail", in /root/bench-client.log.
start_client() {
  on "$1" 'cat > /root/bench-client && chmod 700 /root/bench-client'
  on "$1" 'rm -f /root/bench-client.log; systemd-run --quiet --unit=bench-client --collect sh -c "/root/bench-client > /root/bench-client.log 2>&1"'
}
stop_client() {
  on "$1" 'systemctl stop bench-client 2>/dev/null; true'
}
# After a crash at epoch CRASH, the client's log on node N as "SECONDS LAST": the first success
# after the first failure and the last failure, both in seconds after the crash; "0 0" when
# nothing failed but a success came after the crash; nothing while it has not recovered.
recovery() {
  on "$1" 'cat /root/bench-client.log' | awk -v c="$2" '
    $1 <= c { next }
    $2 == "fail" { failed = 1; last = $1 - c }
    $2 == "ok" { ok = 1; if (failed && !took) took = $1 - c }
    END {
      if (took) printf "%.1f %.1f\n", took, last
      else if (!failed && ok) print "0 0"
    }'
}
# Crashes node VICTIM while the client on node CLIENT runs; once the client has recovered and
# nothing failed for 10 s (90 s at most), prints "SECONDS LAST" (see recovery) and stops it.
crash_and_measure() {
  local victim=$1 client=$2 crash result="" deadline
  sleep 2
  crash=$(date +%s.%N)
  $hactl lab kill "node$victim" >/dev/null
  deadline=$((SECONDS + 90))
  while [ "$SECONDS" -lt "$deadline" ]; do
    sleep 5
    result=$(recovery "$client" "$crash")
    if [ -n "$result" ] && on "$client" 'tail -60 /root/bench-client.log' | awk -v now="$(date +%s)" '
        $1 > now - 10 && $2 == "fail" { bad = 1 } END { exit bad }'; then
      break
    fi
  done
  stop_client "$client"
  if [ -z "$result" ]; then
    echo "node$victim crashed: the client on node$client did not recover within 90 s" >&2
    exit 1
  fi
  echo "$result"
}
# CRASHES crashes for the summary line LABEL: VICTIM prints the node to crash and how to name
# it ("N text"), CLIENT N starts the client on node N (the next node), the figure is the time to
# WHAT, and after each crash the node is started again and STAGES must verify.
crash_series() {
  local label=$1 victim=$2 client=$3 what=$4 stages=$5 figures=() lasts=() i n name other result took last
  for i in $(seq 1 "$CRASHES"); do
    read -r n name < <("$victim") || true
    [ -n "$n" ] || { echo "$label: no node to crash" >&2; exit 1; }
    other=$((n % 3 + 1))
    "$client" "$other"
    result=$(crash_and_measure "$n" "$other")
    read -r took last <<<"$result"
    echo "$label, crash $i: $name crashed -> $what after $took s (the last failure at $last s)"
    figures+=("$took")
    lasts+=("$last")
    $hactl lab up --nodes 3 >/dev/null
    settle "$stages"
  done
  summary+=("$label hard crash -> $what, median of $CRASHES: $(printf '%s\n' "${figures[@]}" | median) s, the last failure $(printf '%s\n' "${lasts[@]}" | median) s after the crash")
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
summary=()

# PostgreSQL: the writer on node N through 5000.
postgres_writer() {
  on "$1" 'umask 077; cat > /root/.bench-pgpass' <<<"$(secret airflow_db_password)"
  start_client "$1" <<'EOF'
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
}
# The Patroni leader, named with whether it is etcd's leader too.
postgres_victim() {
  local leader n also=""
  read -r leader _ < <(leader_on 1)
  n=${leader#node}
  if etcd_leader "$n"; then
    also=" (etcd's leader too)"
  fi
  echo "$n the leader $leader$also"
}
# The leader crashed CRASHES times; then the leader's node under load.
postgres_part() {
  provision base,etcd,postgres,pg-lb
  on 1 "PGPASSWORD=\$(cat) psql -h 127.0.0.1 -p 5000 -U airflow -d airflow -qtAc 'create table if not exists bench_t(at timestamptz)'" <<<"$(secret airflow_db_password)"
  crash_series "PostgreSQL leader" postgres_victim postgres_writer "a write through 5000" etcd,postgres,pg-lb
  local leader n survivor timeline changes end now tl failed total
  read -r leader timeline < <(leader_on 1)
  n=${leader#node}
  survivor=$((n % 3 + 1))
  postgres_writer "$survivor"
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
  stop_client "$survivor"
  failed=$(on "$survivor" 'grep -c " fail$" /root/bench-client.log || true')
  total=$(on "$survivor" 'wc -l < /root/bench-client.log')
  summary+=("${LOAD_SECONDS} s with every CPU busy in the PostgreSQL leader's node: $changes leader changes, $failed of $total writes failed")
  [ "$changes" -eq 0 ]
}

# RabbitMQ: the publisher on node N through the mq LB over TLS (5674, the node verified against
# the cluster CA by the name hactl-lb, as Celery does; the password in a 0600 file, not argv).
rabbitmq_publisher() {
  on "$1" 'umask 077; cat > /root/.bench-amqp' <<<"$(secret rabbitmq_airflow_password)"
  start_client "$1" <<'EOF'
#!/opt/airflow/venv/bin/python
import ssl, time, urllib.parse
import kombu

password = open("/root/.bench-amqp").read().strip()
url = f"amqps://airflow:{urllib.parse.quote(password, safe='')}@127.0.0.1:5674/airflow"
tls = {"ca_certs": "/etc/hactl/tls/ca.crt", "cert_reqs": ssl.CERT_REQUIRED, "server_hostname": "hactl-lb"}
queue = kombu.Queue("bench-failover", routing_key="bench-failover", durable=True,
                    queue_arguments={"x-queue-type": "quorum", "x-max-length": 1000})
while True:
    try:
        with kombu.Connection(url, ssl=tls, connect_timeout=2, transport_options={"confirm_publish": True}) as conn:
            conn.Producer().publish({"at": time.time()}, routing_key="bench-failover", declare=[queue],
                                    delivery_mode=2, timeout=2)
        print(f"{time.time():.3f} ok", flush=True)
    except Exception:
        print(f"{time.time():.3f} fail", flush=True)
    time.sleep(0.2)
EOF
}
# The node that leads the bench queue.
rabbitmq_victim() {
  local n
  n=$(on 1 "rabbitmqctl -q list_queues -p airflow name leader --no-table-headers" | awk '$1 == "bench-failover" { sub(/.*@node/, "", $2); print $2 }')
  [ -z "$n" ] || echo "$n node$n (the queue's leader)"
}
# The queue (declared by a first publish) and its leader crashed CRASHES times.
rabbitmq_part() {
  rabbitmq_publisher 1
  sleep 3
  stop_client 1
  crash_series "RabbitMQ queue leader" rabbitmq_victim rabbitmq_publisher "a confirmed publish through the mq LB" rabbitmq,mq-lb
}

# The web LB: the client on node N asks the VIP over HTTPS, trusting the cluster CA.
web_client() {
  start_client "$1" <<EOF
#!/bin/sh
while :; do
  if curl -sf -o /dev/null --max-time 2 --cacert /etc/hactl/tls/ca.crt https://$vip:8080/api/v2/monitor/health
  then echo "\$(date +%s.%N) ok"
  else echo "\$(date +%s.%N) fail"
  fi
  sleep 0.2
done
EOF
}
# The node that holds the VIP.
web_victim() {
  local n
  for n in 1 2 3; do
    if on "$n" "ip -4 -o addr show | grep -qF ' $vip/'" 2>/dev/null; then
      echo "$n node$n (the VIP's holder)"
      return
    fi
  done
}
# The VIP's holder crashed CRASHES times.
web_part() {
  crash_series "web LB (VIP holder)" web_victim web_client "an API request through the VIP" airflow,web-lb,guard
}

vip=$(awk '/web_lb_vip:/ { gsub(/"/, "", $2); print $2 }' "$inv")
for part in $PARTS; do
  case $part in
    postgres) postgres_part ;;
    rabbitmq | web)
      provision ""
      "${part}_part"
      ;;
    *)
      echo "unknown part $part (postgres, rabbitmq, web)" >&2
      exit 1
      ;;
  esac
done
printf '%s\n' "${summary[@]}"
