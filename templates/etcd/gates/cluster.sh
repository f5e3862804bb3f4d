# shellcheck shell=sh
# Every name of the etcd group is a member, every endpoint healthy, exactly one leader.
# HACTL_TLS: non-empty where etcd speaks TLS, with HACTL_CACERT, HACTL_CERT, HACTL_KEY the
# client's files; HACTL_SCHEME: etcd's scheme, HACTL_OTHER_SCHEME the other (a conversion);
# HACTL_ENDPOINTS: every member's client URL, comma-separated; HACTL_ADDRESSES: their
# addresses, space-separated; HACTL_MEMBERS: the group's names, sorted, comma-separated.
export ETCDCTL_API=3 ETCDCTL_DIAL_TIMEOUT=2s ETCDCTL_COMMAND_TIMEOUT=3s
if [ -n "$HACTL_TLS" ]; then export ETCDCTL_CACERT="$HACTL_CACERT" ETCDCTL_CERT="$HACTL_CERT" ETCDCTL_KEY="$HACTL_KEY"; fi
ask() {
  ip=$1; shift
  etcdctl --endpoints="$HACTL_SCHEME://$ip:2379" "$@" 2>/dev/null ||
    env -u ETCDCTL_CACERT -u ETCDCTL_CERT -u ETCDCTL_KEY etcdctl --endpoints="$HACTL_OTHER_SCHEME://$ip:2379" "$@" 2>/dev/null
}
# Every member in one call of each; one at a time, either scheme, only where that fails
# (a conversion, or to say which member fails).
all=$HACTL_ENDPOINTS
if ! { etcdctl --endpoints="$all" endpoint health >/dev/null 2>&1 &&
       statuses=$(etcdctl --endpoints="$all" endpoint status -w json 2>/dev/null) &&
       members=$(etcdctl --endpoints="$all" member list -w json 2>/dev/null); }; then
  statuses=""
  for ip in $HACTL_ADDRESSES; do
    ask "$ip" endpoint health >/dev/null || { echo "etcd at $ip is not healthy"; exit 1; }
    statuses="$statuses$(ask "$ip" endpoint status -w json)" || { echo "etcd at $ip gives no status"; exit 1; }
  done
  members=$(ask "$ip" member list -w json) || { echo "etcd at $ip lists no members"; exit 1; }
fi
# A member outside the group is one left without --prune (stage etcd's etcd_remove reports it).
missing=$(printf '%s' "$members" | jq -r --arg want "$HACTL_MEMBERS" '($want | split(",")) - [.members[].name] | join(",")')
[ -z "$missing" ] || { echo "not members: $missing (members: $(printf '%s' "$members" | jq -r '[.members[].name] | join(",")'))"; exit 1; }
printf '%s' "$statuses" | jq -es 'add | all(.[]; (.Status.leader // 0) != 0) and ([.[].Status.leader] | unique | length) == 1 and ([.[] | select(.Status.leader == .Status.header.member_id)] | length) <= 1 and ([.[].Status.header.cluster_id] | unique | length) == 1' >/dev/null || { echo "not exactly one leader in one cluster"; exit 1; }
