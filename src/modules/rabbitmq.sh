# shellcheck shell=sh
# Shared by the rabbitmq_* modules: the node's cluster status as one JSON line, or why not.

# `status JSON` (cluster_status), or `status -` and `reason TEXT` when the node does not answer
# (not installed or not running yet: a plan on fresh nodes).
hactl_rabbitmq_status() {
  if ! command -v rabbitmqctl >/dev/null; then
    echo "status -"
    echo "reason RabbitMQ is not installed yet"
  elif out=$(hactl_once cluster_status rabbitmqctl -q cluster_status --formatter json 2>&1); then
    printf 'status %s\n' "$(printf '%s' "$out" | tr -d '\n')"
  else
    echo "status -"
    printf 'reason %s\n' "$(printf '%s' "$out" | head -n1)"
  fi
}
