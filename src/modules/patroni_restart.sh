# shellcheck shell=sh
# `patroni_restart`. Inputs: HACTL_MEMBER (this member's name),
# HACTL_SETTLE (seconds Patroni may take to report a pending restart after a reload),
# HACTL_DAEMON (yes: restart the Patroni daemon itself, not PostgreSQL); and patroni.sh's.

hactl_probe() {
  if systemctl is-active --quiet patroni; then echo "active yes"; else echo "active no"; fi
  if state=$(hactl_get patroni); then
    printf 'member %s\n' "$(printf '%s' "$state" | tr -d '\n')"
  else
    echo "member -"
  fi
}

hactl_pending() {
  hactl_get patroni | jq -en 'input | .pending_restart == true' >/dev/null
}

# Restarts the Patroni daemon (for what it reads only at start: its DCS connection) with the
# cluster paused meanwhile, so that PostgreSQL keeps running and serving (a paused Patroni leaves
# it alone when it stops and takes it up again when it starts). A cluster this restart paused is
# resumed once the member runs again; one paused before stays so (its pauser resumes it). A
# Patroni that does not run has nothing to restart: it reads the new settings when it starts.
hactl_restart_daemon() {
  systemctl is-active --quiet patroni || return 0
  paused_here=no
  if ! hactl_wait_member 1 '.pause == true'; then
    hactl_unsafe PATCH config '{"pause": true}' >/dev/null || { echo "Patroni refused to pause the cluster (PATCH /config)" >&2; return 1; }
    hactl_wait_member 30 '.pause == true' || { echo "Patroni did not pause" >&2; return 1; }
    paused_here=yes
  fi
  systemctl daemon-reload || return 1
  if ! systemctl restart patroni || ! hactl_wait_member 120 '.state == "running"'; then
    echo "Patroni does not report a running member 120 s after its restart (the cluster stays paused)" >&2
    return 1
  fi
  [ "$paused_here" = yes ] || return 0
  hactl_unsafe PATCH config '{"pause": false}' >/dev/null || { echo "Patroni refused to resume the cluster (PATCH /config)" >&2; return 1; }
  hactl_wait_member 30 '.pause != true' || { echo "Patroni did not resume" >&2; return 1; }
}

# Restarts PostgreSQL where Patroni reports a pending restart; a leader switches over first (its
# demotion restarts it as a replica, which may already clear the pending restart). With
# HACTL_DAEMON=yes, restarts the daemon instead.
hactl_apply() {
  if [ "$HACTL_DAEMON" = yes ]; then
    hactl_restart_daemon
    return
  fi
  i=0
  while [ "$i" -lt "$HACTL_SETTLE" ] && ! hactl_pending; do
    sleep 1
    i=$((i + 1))
  done
  hactl_pending || return 0
  if [ "$(hactl_status primary)" = 200 ]; then
    body=$(jq -cn --arg leader "$HACTL_MEMBER" '{leader: $leader}') || return 1
    hactl_unsafe POST switchover "$body" || return 1
    i=0
    while [ "$i" -lt 60 ] && [ "$(hactl_status primary)" = 200 ]; do sleep 1; i=$((i + 1)); done
    i=0
    while [ "$i" -lt 60 ] && [ "$(hactl_status replica)" != 200 ]; do sleep 1; i=$((i + 1)); done
    hactl_pending || return 0
  fi
  hactl_unsafe POST restart '{"restart_pending": true}'
}
