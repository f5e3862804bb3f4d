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
# remain runs): its replicas leave every quorum queue first (rabbitmq-queues shrink, whose
# failures for single queues are rows on stdout with an `error: …` result: any fails the step,
# before the cluster forgets the node, so that the next run tries again), then the cluster forgets
# it. A node that runs now (it
# came back since the plan) is refused and nothing is forgotten.
hactl_apply() {
  status=$(hactl_rabbitmq_cluster_json) || { echo "RabbitMQ does not answer here" >&2; return 1; }
  running=$(printf '%s' "$status" | jq -r --arg group "$HACTL_NODES" \
    '(.running_nodes - ($group | split("\n"))) | join(" ")')
  if [ -n "$running" ]; then
    echo "$running left group rabbitmq but still run: not forgotten (stop rabbitmq-server there, then run provision --prune again)" >&2
    return 1
  fi
  printf '%s' "$status" | jq -r '.disk_nodes[]' | while IFS= read -r node; do
    hactl_wanted "$node" && continue
    failed=$(rabbitmq-queues -q shrink "$node" --errors-only) || { echo "rabbitmq-queues shrink $node failed: $failed" >&2; exit 1; }
    case $failed in
      *error*) echo "rabbitmq-queues shrink $node failed for some queues (not forgotten): $failed" >&2; exit 1 ;;
    esac
    rabbitmqctl -q forget_cluster_node "$node" || { echo "rabbitmqctl forget_cluster_node $node failed" >&2; exit 1; }
    echo "forgot $node"
  done
}
