# shellcheck shell=sh
# `patroni_restart`. Inputs: HACTL_API (Patroni's REST API), HACTL_MEMBER (this member's name),
# HACTL_SETTLE (seconds Patroni may take to report a pending restart after a reload).

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
    curl -sf -XPOST "$HACTL_API/switchover" -d "$body" || return 1
    i=0
    while [ "$i" -lt 60 ] && [ "$(hactl_status primary)" = 200 ]; do sleep 1; i=$((i + 1)); done
    i=0
    while [ "$i" -lt 60 ] && [ "$(hactl_status replica)" != 200 ]; do sleep 1; i=$((i + 1)); done
    hactl_pending || return 0
  fi
  curl -sf -XPOST "$HACTL_API/restart" -d '{"restart_pending": true}'
}
