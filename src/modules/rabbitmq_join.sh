# shellcheck shell=sh
# `rabbitmq_join`. Inputs: HACTL_NODE (this node, rabbit@HOST), HACTL_NODES (the group's nodes in
# the inventory's order, comma-separated), HACTL_VHOST (the vhost a provisioned cluster holds).

# This node's status; for a node in no cluster of the group, the node it would join (`seed`).
hactl_probe() {
  status=$(hactl_rabbitmq_status)
  printf '%s\n' "$status"
  case $status in
    "status {"*) hactl_in_group_cluster "${status#status }" || printf 'seed %s\n' "$(hactl_rabbitmq_seed)" ;;
  esac
}

# Whether the cluster status JSON $1 names a node of the group other than this one.
hactl_in_group_cluster() {
  for disk in $(printf '%s' "$1" | jq -r '.disk_nodes[]'); do
    [ "$disk" = "$HACTL_NODE" ] && continue
    case ",$HACTL_NODES," in *",$disk,"*) return 0 ;; esac
  done
  return 1
}

# The node this one joins: the first node of the group (this one aside) whose RabbitMQ answers
# and holds HACTL_VHOST (a running cluster's), else the group's first node (a new cluster; this
# node itself when it is the first). Never a blank node of a running cluster: a node listed first
# in the group but added later joins the others.
hactl_rabbitmq_seed() {
  for peer in $(printf '%s' "$HACTL_NODES" | tr ',' ' '); do
    [ "$peer" = "$HACTL_NODE" ] && continue
    if rabbitmqctl -q -t 10 -n "$peer" list_vhosts 2>/dev/null | grep -qxF -- "$HACTL_VHOST"; then
      echo "$peer"
      return 0
    fi
  done
  echo "${HACTL_NODES%%,*}"
}

# A member is left alone; a node of another cluster is an error; the seed of a new cluster stays
# as it is; a blank node does stop_app, reset, join_cluster, start_app; a member wiped by hand (the
# cluster still lists it) is forgotten by the seed and joins afresh. A node that joined gets its
# replica of every quorum queue.
hactl_apply() {
  # An app left stopped by an interrupted join starts again (standalone or clustered).
  rabbitmqctl -q start_app >/dev/null 2>&1
  rabbitmqctl -q await_startup --timeout 120 || return 1
  status=$(rabbitmqctl -q cluster_status --formatter json) || return 1
  hactl_in_group_cluster "$status" && return 0
  if printf '%s' "$status" | jq -r '.disk_nodes[]' | grep -vxF -- "$HACTL_NODE" | grep -q .; then
    echo "$HACTL_NODE belongs to another cluster: $status" >&2
    return 1
  fi
  seed=$(hactl_rabbitmq_seed)
  [ "$seed" = "$HACTL_NODE" ] && return 0
  rabbitmqctl stop_app && rabbitmqctl reset || return 1
  if ! out=$(rabbitmqctl join_cluster "$seed" 2>&1); then
    echo "$out"
    echo "$out" | grep -q inconsistent_cluster || { rabbitmqctl start_app; return 1; }
    rabbitmqctl -n "$seed" forget_cluster_node "$HACTL_NODE" || return 1
    rabbitmqctl join_cluster "$seed" || return 1
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
