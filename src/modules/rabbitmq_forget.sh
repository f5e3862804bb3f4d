# shellcheck shell=sh
# `rabbitmq_forget`. Inputs: HACTL_NODES (the group's nodes, rabbit@HOST, one a line).
# rabbitmq.sh's helpers come first.

# The cluster status (rabbitmq.sh).
hactl_probe() {
  hactl_rabbitmq_status
}

# Whether node $1 is in the group.
hactl_wanted() {
  printf '%s\n' "$HACTL_NODES" | grep -qxF -- "$1"
}

# Forgets every disk node outside the group (the plan checked that a majority of the nodes that
# remain runs): its replicas leave every quorum queue first (rabbitmq-queues shrink), then the
# cluster forgets it. A node still running is stopped first (its app, over Erlang distribution);
# where that fails, nothing is forgotten and the error says how to stop it.
hactl_apply() {
  status=$(hactl_rabbitmq_cluster_json) || { echo "RabbitMQ does not answer here" >&2; return 1; }
  printf '%s' "$status" | jq -r '.disk_nodes[]' | while IFS= read -r node; do
    hactl_wanted "$node" && continue
    if printf '%s' "$status" | jq -e --arg n "$node" '.running_nodes | index($n)' >/dev/null; then
      rabbitmqctl -q -n "$node" stop_app >/dev/null 2>&1 ||
        { echo "$node still runs and could not be stopped from here: stop rabbitmq-server on its host, then run again" >&2; exit 1; }
    fi
    rabbitmq-queues -q shrink "$node" --errors-only >/dev/null || { echo "rabbitmq-queues shrink $node failed" >&2; exit 1; }
    rabbitmqctl -q forget_cluster_node "$node" || { echo "rabbitmqctl forget_cluster_node $node failed" >&2; exit 1; }
    echo "forgot $node"
  done
}
