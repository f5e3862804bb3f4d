# shellcheck shell=sh
# `rabbitmq_join`. Inputs: HACTL_NODE (this node, rabbit@HOST), HACTL_SEED (rabbit@SEED).

hactl_probe() {
  hactl_rabbitmq_status
}

# A member is left alone; a node of another cluster is an error; a blank node does stop_app,
# reset, join_cluster, start_app; a member wiped by hand (the cluster still lists it) is forgotten
# by the seed and joins afresh. A node that joined gets its replica of every quorum queue.
hactl_apply() {
  # An app left stopped by an interrupted join starts again (standalone or clustered).
  rabbitmqctl -q start_app >/dev/null 2>&1
  rabbitmqctl -q await_startup --timeout 120 || return 1
  status=$(rabbitmqctl -q cluster_status --formatter json) || return 1
  disk=$(printf '%s' "$status" | jq -r '.disk_nodes[]') || return 1
  if printf '%s\n' "$disk" | grep -qxF -- "$HACTL_SEED"; then
    return 0
  fi
  if printf '%s\n' "$disk" | grep -vxF -- "$HACTL_NODE" | grep -q .; then
    echo "$HACTL_NODE belongs to another cluster: $status" >&2
    return 1
  fi
  rabbitmqctl stop_app && rabbitmqctl reset || return 1
  if ! out=$(rabbitmqctl join_cluster "$HACTL_SEED" 2>&1); then
    echo "$out"
    echo "$out" | grep -q inconsistent_cluster || { rabbitmqctl start_app; return 1; }
    rabbitmqctl -n "$HACTL_SEED" forget_cluster_node "$HACTL_NODE" || return 1
    rabbitmqctl join_cluster "$HACTL_SEED" || return 1
  fi
  hactl_start_app_retrying || return 1
  # The quorum queues declared before it get a replica here too (RabbitMQ adds none by itself;
  # a node forgotten before it joined again was removed from them).
  hactl_rabbitmq_grow "$HACTL_NODE"
}

# start_app, tried again for a while: a node that joins while another node joins the same seed can
# fail to start its database once (`badmatch ... mnesia_app`: the schema is being changed by the
# other join); started a few seconds later, it is a member.
hactl_start_app_retrying() {
  tries=0
  until rabbitmqctl start_app; do
    tries=$((tries + 1))
    [ "$tries" -lt 5 ] || return 1
    sleep $((tries * 3))
  done
}
