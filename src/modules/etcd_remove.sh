# shellcheck shell=sh
# `etcd_remove`. Inputs: HACTL_NAME (this member's name), HACTL_MEMBERS (the group's names, one a
# line), HACTL_VIA (the group's client URLs, one a line), HACTL_CACERT, HACTL_CERT, HACTL_KEY (for
# https:// URLs; empty: none). etcd.sh's helpers come first.

# The members line (etcd.sh), then, where a named member is outside the group, `healthy NAME` for
# each started member whose first client URL reports itself healthy (a re-run with none outside
# asks nothing more).
# shellcheck disable=SC2154 # hactl_members and hactl_list are set by hactl_probe_members (etcd.sh)
hactl_probe() {
  hactl_probe_members
  [ "$hactl_members" = listed ] || return 0
  printf '%s' "$hactl_list" | jq -e --arg group "$HACTL_MEMBERS" \
    '[.members[] | (.name // "") | select(. != "")] - ($group | split("\n")) | length > 0' >/dev/null || return 0
  printf '%s' "$hactl_list" |
    jq -r '.members[] | select((.name // "") != "" and ((.clientURLs // []) | length) > 0) | "\(.name) \(.clientURLs[0])"' |
    while read -r name url; do
      if hactl_endpoint_healthy "$url"; then echo "healthy $name"; fi
    done
}

# Whether name $1 is in the group.
hactl_wanted() {
  printf '%s\n' "$HACTL_MEMBERS" | grep -qxF -- "$1"
}

# Removes, through a member of the group that answers, every member outside it (the plan checked
# that quorum holds without them): the ones that do not answer first; a leader hands its
# leadership to this member first, so that no election follows. A member already gone (removed
# by an earlier, interrupted run) is not an error.
hactl_apply() {
  e=$(hactl_answering_endpoint "$HACTL_VIA")
  [ -n "$e" ] || { echo "no member of the etcd group answers" >&2; return 1; }
  list=$(hactl_etcdctl "$e" member list) || return 1
  me=$(printf '%s\n' "$list" | awk -F', ' -v n="$HACTL_NAME" '$3 == n { print $1 }')
  [ -n "$me" ] || { echo "$HACTL_NAME is not a member of the etcd cluster it asked ($e)" >&2; return 1; }
  down=""
  up=""
  while IFS= read -r line; do
    name=$(printf '%s' "$line" | awk -F', ' '{ print $3 }')
    if [ -z "$name" ] || hactl_wanted "$name"; then continue; fi
    url=$(printf '%s' "$line" | awk -F', ' '{ split($5, u, ","); print u[1] }')
    if [ -n "$url" ] && hactl_endpoint_healthy "$url"; then up="$up$line
"; else down="$down$line
"; fi
  done <<EOF
$list
EOF
  printf '%s%s' "$down" "$up" | while IFS= read -r line; do
    [ -n "$line" ] || continue
    id=${line%%,*}
    name=$(printf '%s' "$line" | awk -F', ' '{ print $3 }')
    url=$(printf '%s' "$line" | awk -F', ' '{ split($5, u, ","); print u[1] }')
    if [ -n "$url" ] && hactl_endpoint_healthy "$url" &&
      [ "$(hactl_etcdctl "$url" endpoint status 2>/dev/null | awk -F', ' '{ print $5 }')" = true ]; then
      hactl_etcdctl "$url" move-leader "$me" >/dev/null || { echo "etcd: moving the leadership from $name to $HACTL_NAME failed" >&2; exit 1; }
    fi
    if ! out=$(hactl_etcdctl "$e" member remove "$id" 2>&1); then
      case $out in
        *"member not found"*) ;;
        *) echo "etcd member remove $name: $out" >&2; exit 1 ;;
      esac
    fi
    echo "removed etcd member $name"
  done
}
