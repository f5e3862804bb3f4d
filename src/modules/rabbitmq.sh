# shellcheck shell=sh
# Shared by the rabbitmq_* modules: the node's cluster status as one JSON line, or why not; reads
# through the management API that is already up (curl), else through rabbitmqctl (which boots an
# Erlang VM: about 0.8 s of CPU a call).

# The management API's credentials for hactl's reads: a curl configuration holding the
# administrator's Authorization header, root-only, written by the rabbitmq stage. Without it,
# before the administrator exists, or while the API starts, the reads below fail over to
# rabbitmqctl.
HACTL_RABBITMQ_API_AUTH=/etc/hactl/rabbitmq-api.curl

# hactl_rabbitmq_api PATH: GET /api/PATH from the local management API as the administrator;
# prints the body and exits 0 on 200, prints nothing and exits 4 on 404, fails otherwise.
hactl_rabbitmq_api() {
  [ -r "$HACTL_RABBITMQ_API_AUTH" ] || return 1
  hactl_api_out=$(curl -s --max-time 5 -K "$HACTL_RABBITMQ_API_AUTH" -w '\n%{http_code}' "http://127.0.0.1:15672/api/$1") || return 1
  hactl_api_code=$(printf '%s' "$hactl_api_out" | tail -n1)
  case $hactl_api_code in
    200) printf '%s\n' "$hactl_api_out" | sed '$d' ;;
    404) return 4 ;;
    *) return 1 ;;
  esac
}

# $1 percent-encoded for a URL path segment (a user's name in /api/users/NAME), byte by byte
# (the batch runs with LC_ALL=C) with shell builtins: starting jq for it cost more than the request.
hactl_uri() {
  hactl_rest=$1
  while [ -n "$hactl_rest" ]; do
    hactl_c=${hactl_rest%"${hactl_rest#?}"}
    hactl_rest=${hactl_rest#?}
    case $hactl_c in
      [A-Za-z0-9._~-]) printf '%s' "$hactl_c" ;;
      *) printf '%%%02X' "'$hactl_c" ;;
    esac
  done
}

# The cluster status in cluster_status's shape (running_nodes, disk_nodes, partitions, alarms),
# from the API's node list, else from rabbitmqctl.
hactl_rabbitmq_cluster_json() {
  if nodes=$(hactl_rabbitmq_api 'nodes?columns=name,type,running,partitions,mem_alarm,disk_free_alarm'); then
    printf '%s' "$nodes" | jq -c '{
      running_nodes: [.[] | select(.running) | .name],
      disk_nodes: [.[] | select(.type == "disc") | .name],
      partitions: [.[] | .partitions[]?],
      alarms: [.[] | select(.mem_alarm or .disk_free_alarm) | .name]}'
  else
    rabbitmqctl -q cluster_status --formatter json
  fi
}

# `status JSON` (the cluster status), or `status -` and `reason TEXT` when the node does not answer
# (not installed or not running yet: a plan on fresh nodes).
hactl_rabbitmq_status() {
  if ! command -v rabbitmqctl >/dev/null; then
    echo "status -"
    echo "reason RabbitMQ is not installed yet"
  elif out=$(hactl_once cluster_status hactl_rabbitmq_cluster_json 2>&1); then
    printf 'status %s\n' "$(printf '%s' "$out" | tr -d '\n')"
  else
    echo "status -"
    printf 'reason %s\n' "$(printf '%s' "$out" | head -n1)"
  fi
}

# Whether HACTL_PASSWORD is user $1's: its stored hash (salted SHA-256, RabbitMQ's default) from
# the API, else from `rabbitmqctl export_definitions` (before the API is up). The password itself
# never reaches a process: RabbitMQ 4's authenticate_user reads it from a terminal and waits forever
# on a pipe. Exits 0 when it is, 1 when not (or no such user).
hactl_rabbitmq_password_ok() {
  user_json=$(hactl_rabbitmq_api "users/$(hactl_uri "$1")")
  case $? in
    0) ;;
    4) return 1 ;;
    *) user_json=$(rabbitmqctl -q export_definitions - --format json 2>/dev/null |
         jq -c --arg u "$1" '.users[]? | select(.name == $u)') || return 1 ;;
  esac
  [ -n "$user_json" ] || return 1
  hashed=$(printf '%s' "$user_json" | jq -r '"\(.hashing_algorithm) \(.password_hash)"')
  [ "${hashed%% *}" = rabbit_password_hashing_sha256 ] || return 1
  hactl_sha256_matches "${hashed#* }"
}

# Whether HACTL_PASSWORD hashes to $1, RabbitMQ's base64(salt4 + sha256(salt4 + password)).
hactl_sha256_matches() {
  want=$(printf '%s' "$1" | base64 -d | tail -c +5 | od -An -tx1 | tr -d ' \n')
  got=$({ printf '%s' "$1" | base64 -d | head -c 4; printf '%s' "$HACTL_PASSWORD"; } | sha256sum | cut -d' ' -f1)
  [ -n "$want" ] && [ "$want" = "$got" ]
}

# A replica on node $1 for every quorum queue of every vhost that lacks one (RabbitMQ adds none
# by itself for queues declared before the node joined).
hactl_rabbitmq_grow() {
  rabbitmq-queues grow "$1" all --vhost-pattern '.*' --queue-pattern '.*' --errors-only
}
