# shellcheck shell=sh
# Exactly one leader, a member of the group; every other member of the group a streaming replica
# on the same timeline, lag under the threshold. A member outside the group (its host left it,
# and `provision --prune` has not stopped its Patroni yet) is left out of the judgement.
# HACTL_CACERT: the cluster CA; HACTL_URL: this node's Patroni /cluster; HACTL_SCHEME: http or
# https; HACTL_MEMBERS: the group's names, comma-separated; HACTL_MAX_LAG: the most bytes of lag.
# Patroni's REST API (GET /cluster, what patronictl list shows) instead of starting patronictl.
cluster=$(curl -sf --max-time 5 --cacert "$HACTL_CACERT" "$HACTL_URL") || { echo "Patroni's REST API did not answer over $HACTL_SCHEME"; exit 1; }
# A paused cluster (maintenance mode, or a Patroni restart that did not finish) never fails over.
verdict=$(printf '%s' "$cluster" | jq -r --arg group "$HACTL_MEMBERS" --argjson lag "$HACTL_MAX_LAG" '
  ($group | split(",")) as $names |
  if .pause == true then "the cluster is paused (patronictl resume)"
  elif (.members |
    ([.[] | select(.role == "leader")] | length) == 1
    and ([.[] | select(.role == "leader") | .name] - $names | length) == 0
    and ([.[] | select(.name | IN($names[]))] | length) == ($names | length)
    and all(.[] | select(.role != "leader" and (.name | IN($names[]))); .role == "replica" and (.state == "running" or .state == "streaming") and ((.lag // 0) | type == "number" and . <= $lag))
    and ([.[] | select(.name | IN($names[])) | .timeline] | unique | length) == 1) then "ok"
  else "members: \([.members[]? | {name, role, state, timeline, lag}] | tojson)" end') || { echo "Patroni's /cluster answer is not JSON: $cluster"; exit 1; }
[ "$verdict" = ok ] || { echo "$verdict"; exit 1; }
