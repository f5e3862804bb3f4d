# shellcheck shell=sh
# `patroni_leave`. Inputs: HACTL_MEMBER (this member's name), HACTL_GROUP (the group's names, one
# a line), HACTL_TIMEOUT (seconds the new leader may take); and patroni.sh's.

# `cluster -` where Patroni does not answer here; else `cluster JSON`, its members' names, roles
# and states (GET /cluster).
hactl_probe() {
  if cluster=$(hactl_get cluster 2>/dev/null); then
    printf 'cluster %s\n' "$(printf '%s' "$cluster" | jq -c '{members: [.members[]? | {name, role, state}]}')"
  else
    echo "cluster -"
  fi
}

# The first member of the group that is a running replica (the one the leader hands over to).
hactl_candidate() {
  jq -r --arg group "$HACTL_GROUP" '[.members[]? | select((.name | IN($group | split("\n")[]))
    and (.role == "replica" or .role == "sync_standby") and (.state == "running" or .state == "streaming"))][0].name // empty'
}

# The leader's name, from GET /cluster on standard input.
hactl_leader() {
  jq -r '.members[]? | select(.role == "leader") | .name'
}

# Where this member leads: a switchover to the group's first running replica (Patroni waits for
# it to catch up, unlike a failover), then waits until it leads.
hactl_apply() {
  cluster=$(hactl_get cluster) || { echo "Patroni does not answer here" >&2; return 1; }
  [ "$(printf '%s' "$cluster" | hactl_leader)" = "$HACTL_MEMBER" ] || return 0
  candidate=$(printf '%s' "$cluster" | hactl_candidate)
  [ -n "$candidate" ] || { echo "no member of the group is a running replica to take over from $HACTL_MEMBER" >&2; return 1; }
  body=$(jq -cn --arg leader "$HACTL_MEMBER" --arg candidate "$candidate" '{leader: $leader, candidate: $candidate}') || return 1
  hactl_unsafe POST switchover "$body" >/dev/null || { echo "Patroni refused the switchover from $HACTL_MEMBER to $candidate" >&2; return 1; }
  i=0
  until [ "$(hactl_get cluster | hactl_leader)" = "$candidate" ]; do
    i=$((i + 1))
    [ "$i" -lt "$HACTL_TIMEOUT" ] || { echo "$candidate does not lead ${HACTL_TIMEOUT} s after the switchover" >&2; return 1; }
    sleep 1
  done
  echo "switched the Patroni leader over from $HACTL_MEMBER to $candidate"
}
