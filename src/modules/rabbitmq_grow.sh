# shellcheck shell=sh
# `rabbitmq_grow`. Inputs: HACTL_NODE (this node, rabbit@HOST), HACTL_TIMEOUT (seconds the apply
# waits for the management API to list the new replicas).

# Every queue of every vhost as the API lists them ([{name, vhost, type, members}]); from
# rabbitmqctl (an Erlang VM a call) where the API does not answer yet (before the administrator
# exists, or on a node that just joined). Fails when neither answers.
hactl_queues_json() {
  if hactl_rabbitmq_api 'queues?columns=name,vhost,type,members'; then
    return 0
  fi
  vhosts=$(rabbitmqctl -q list_vhosts --formatter json 2>/dev/null) || return 1
  names=$(printf '%s' "$vhosts" | jq -r '.[].name') || return 1
  all='[]'
  while IFS= read -r vhost; do
    [ -n "$vhost" ] || continue
    queues=$(rabbitmqctl -q list_queues -p "$vhost" name type members --formatter json 2>/dev/null) || return 1
    all=$(printf '%s' "$queues" | jq -c --arg vhost "$vhost" --argjson all "$all" '$all + [.[] | . + {vhost: $vhost}]') || return 1
  done <<EOF
$names
EOF
  printf '%s\n' "$all"
}

# The quorum queues (every vhost) without a replica on HACTL_NODE: `missing N` and
# `queues VHOST/NAME ...` (the first five), or `missing -` and `reason TEXT`.
hactl_probe() {
  if ! command -v rabbitmqctl >/dev/null; then
    echo "missing -"
    echo "reason RabbitMQ is not installed yet"
  elif queues=$(hactl_queues_json); then
    printf '%s' "$queues" | jq -r --arg node "$HACTL_NODE" '
      [.[] | select(.type == "quorum") | select((.members // []) | index($node) | not)]
      | "missing \(length)", "queues \([.[:5][] | "\(.vhost)/\(.name)"] | join(" "))"'
  else
    echo "missing -"
    echo "reason RabbitMQ does not answer here yet"
  fi
}

# Adds a replica on this node to every quorum queue that lacks one (RabbitMQ never does it by
# itself for queues declared before the node joined), then waits until none lacks it.
hactl_apply() {
  hactl_rabbitmq_grow "$HACTL_NODE" || return 1
  deadline=$(($(date +%s) + HACTL_TIMEOUT))
  until probe=$(hactl_probe) && printf '%s\n' "$probe" | grep -qx 'missing 0'; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "quorum queues still without a replica on $HACTL_NODE after ${HACTL_TIMEOUT}s: $(printf '%s\n' "$probe" | sed -n -e 's/^queues //p' -e 's/^reason //p')" >&2
      return 1
    fi
    sleep 1
  done
}
