# shellcheck shell=sh
# `rabbitmq_vhost`. Inputs: HACTL_VHOST, HACTL_QUEUE_TYPE (default queue type on creation; empty:
# RabbitMQ's).

hactl_probe() {
  hactl_rabbitmq_status
  if vhosts=$(hactl_rabbitmq_api 'vhosts?columns=name' || rabbitmqctl -q list_vhosts name --formatter json 2>/dev/null); then
    printf 'vhosts %s\n' "$(printf '%s' "$vhosts" | tr -d '\n')"
  fi
}

hactl_apply() {
  rabbitmqctl -q await_startup --timeout 120 || return 1
  if [ -n "$HACTL_QUEUE_TYPE" ]; then
    rabbitmqctl -q add_vhost --default-queue-type "$HACTL_QUEUE_TYPE" "$HACTL_VHOST"
  else
    rabbitmqctl -q add_vhost "$HACTL_VHOST"
  fi
}
