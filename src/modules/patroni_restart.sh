# shellcheck shell=sh
# `patroni_restart`. Inputs: HACTL_API (Patroni's REST API), HACTL_MEMBER (this member's name),
# HACTL_SETTLE (seconds Patroni may take to report a pending restart after a reload),
# HACTL_API_USER and HACTL_API_PASSWORD (for the unsafe endpoints; empty where they need none).

hactl_probe() {
  if state=$(curl -sf --max-time 5 "$HACTL_API/patroni"); then
    printf 'member %s\n' "$(printf '%s' "$state" | tr -d '\n')"
  else
    echo "member -"
  fi
}

hactl_pending() {
  curl -sf --max-time 5 "$HACTL_API/patroni" | jq -en 'input | .pending_restart == true' >/dev/null
}

hactl_status() {
  curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$HACTL_API/$1"
}

# POSTs $2 to the unsafe endpoint $1, with the credentials through curl's standard input (a
# config line, its quotes and backslashes escaped), never on its command line.
hactl_post() {
  if [ -z "$HACTL_API_USER" ]; then
    curl -sf -XPOST "$HACTL_API/$1" -d "$2"
    return
  fi
  printf 'user = "%s"\n' "$(printf '%s:%s' "$HACTL_API_USER" "$HACTL_API_PASSWORD" | sed 's/[\\"]/\\&/g')" |
    curl -sf -K - -XPOST "$HACTL_API/$1" -d "$2"
}

# Restarts PostgreSQL where Patroni reports a pending restart; a leader switches over first (its
# demotion restarts it as a replica, which may already clear the pending restart).
hactl_apply() {
  i=0
  while [ "$i" -lt "$HACTL_SETTLE" ] && ! hactl_pending; do
    sleep 1
    i=$((i + 1))
  done
  hactl_pending || return 0
  if [ "$(hactl_status primary)" = 200 ]; then
    body=$(jq -cn --arg leader "$HACTL_MEMBER" '{leader: $leader}') || return 1
    hactl_post switchover "$body" || return 1
    i=0
    while [ "$i" -lt 60 ] && [ "$(hactl_status primary)" = 200 ]; do sleep 1; i=$((i + 1)); done
    i=0
    while [ "$i" -lt 60 ] && [ "$(hactl_status replica)" != 200 ]; do sleep 1; i=$((i + 1)); done
    hactl_pending || return 0
  fi
  hactl_post restart '{"restart_pending": true}'
}
