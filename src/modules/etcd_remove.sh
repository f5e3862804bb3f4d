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

# Removes, through a member of the group that answers, every named member outside it (the plan
# checked that quorum holds without them). One that answers now (it came back since the plan) is
# refused and nothing is removed: hactl does not stop a live machine's services yet. A member
# already gone (removed by an earlier, interrupted run) is not an error.
hactl_apply() {
  e=$(hactl_answering_endpoint "$HACTL_VIA")
  [ -n "$e" ] || { echo "no member of the etcd group answers" >&2; return 1; }
  list=$(hactl_etcdctl "$e" member list) || return 1
  leaving=$(printf '%s\n' "$list" | while IFS= read -r line; do
    name=$(printf '%s' "$line" | awk -F', ' '{ print $3 }')
    if [ -n "$name" ] && ! hactl_wanted "$name"; then printf '%s\n' "$line"; fi
  done)
  [ -n "$leaving" ] || return 0
  running=$(printf '%s\n' "$leaving" | while IFS= read -r line; do
    url=$(printf '%s' "$line" | awk -F', ' '{ split($5, u, ","); print u[1] }')
    if [ -n "$url" ] && hactl_endpoint_healthy "$url"; then printf '%s ' "$(printf '%s' "$line" | awk -F', ' '{ print $3 }')"; fi
  done)
  if [ -n "$running" ]; then
    echo "etcd members ${running% } left group etcd but still run: not removed (stop the stack there, then run provision --prune again)" >&2
    return 1
  fi
  printf '%s\n' "$leaving" | while IFS= read -r line; do
    id=${line%%,*}
    name=$(printf '%s' "$line" | awk -F', ' '{ print $3 }')
    if ! out=$(hactl_etcdctl "$e" member remove "$id" 2>&1); then
      case $out in
        *"member not found"*) ;;
        *) echo "etcd member remove $name: $out" >&2; exit 1 ;;
      esac
    fi
    echo "removed etcd member $name"
  done
}
