# shellcheck shell=sh
# `etcd_member`. Inputs: HACTL_NAME (the member's name), HACTL_PEER_URLS (wanted, comma-separated),
# HACTL_ENDPOINTS (the member's own client URLs, one a line, the first that answers), HACTL_VIA
# (the other members' client URLs, one a line: the update goes through them), HACTL_CACERT,
# HACTL_CERT, HACTL_KEY (for https:// endpoints; empty: none), HACTL_TIMEOUT (seconds the apply
# waits for an endpoint to answer). etcd.sh's helpers come first.

# `members JSON` (member list -w json), or `members -` and `reason TEXT`.
hactl_probe() {
  if ! command -v etcdctl >/dev/null; then
    echo "members -"
    echo "reason etcdctl is not installed yet"
    return 0
  fi
  e=$(hactl_answering_endpoint "$HACTL_ENDPOINTS")
  if [ -n "$e" ] && out=$(hactl_etcdctl "$e" member list -w json 2>&1); then
    printf 'members %s\n' "$(printf '%s' "$out" | tr -d '\n')"
  else
    echo "members -"
    echo "reason no endpoint answers ($(printf '%s' "$HACTL_ENDPOINTS" | tr '\n' ' '))"
  fi
}

# Waits for an endpoint, then updates the member's peer URLs when they differ (member IDs from
# the simple format, in hex as `member update` takes them: JSON's are 64-bit numbers). The update
# goes through another member where one answers: once it commits, the peers dial this member at
# its new URLs, which it serves only after its restart, so its own answer may never come.
hactl_apply() {
  deadline=$(($(date +%s) + HACTL_TIMEOUT))
  until e=$(hactl_answering_endpoint "$HACTL_ENDPOINTS") && [ -n "$e" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "no etcd endpoint answered within ${HACTL_TIMEOUT}s" >&2
      return 1
    fi
    sleep 1
  done
  line=$(hactl_etcdctl "$e" member list | awk -F', ' -v n="$HACTL_NAME" '$3 == n') || return 1
  [ -n "$line" ] || { echo "$HACTL_NAME is not a member of the etcd cluster" >&2; return 1; }
  id=${line%%,*}
  current=$(printf '%s' "$line" | awk -F', ' '{print $4}')
  [ "$current" = "$HACTL_PEER_URLS" ] && return 0
  hactl_hand_over_leadership "$e" || return 1
  via=$(hactl_answering_endpoint "$HACTL_VIA")
  hactl_etcdctl "${via:-$e}" member update "$id" --peer-urls="$HACTL_PEER_URLS" >/dev/null
}

# A leader hands its leadership to another started member first: until its restart its peers
# cannot reach it at the new URLs, and a leader that hears no one stalls the cluster until it
# steps down (a follower cut off that way disturbs nothing: pre-vote).
hactl_hand_over_leadership() {
  status=$(hactl_etcdctl "$1" endpoint status) || return 1
  [ "$(printf '%s' "$status" | awk -F', ' '{print $5}')" = true ] || return 0
  other=$(hactl_etcdctl "$1" member list | awk -F', ' -v n="$HACTL_NAME" '$2 == "started" && $3 != n {print $1; exit}')
  [ -n "$other" ] || return 0
  hactl_etcdctl "$1" move-leader "$other" >/dev/null
}
