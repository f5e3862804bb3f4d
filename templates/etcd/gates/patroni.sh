# shellcheck shell=sh
# Patroni reaches etcd, every member registered, one leader, not paused (where Patroni is
# installed).
# HACTL_CACERT: the cluster CA; HACTL_URL, HACTL_OTHER_URL: this node's Patroni /cluster over
# either scheme; HACTL_MEMBERS: how many members.
systemctl cat patroni.service >/dev/null 2>&1 || exit 0
# Either scheme: stage postgres turns TLS on after this part.
cluster=$(curl -sf --max-time 5 --cacert "$HACTL_CACERT" "$HACTL_URL" || curl -sf --max-time 5 --cacert "$HACTL_CACERT" "$HACTL_OTHER_URL") || { echo "Patroni's REST API did not answer"; exit 1; }
printf '%s' "$cluster" | jq -e '.pause != true' >/dev/null || { echo "the cluster is paused"; exit 1; }
printf '%s' "$cluster" | jq -en --argjson n "$HACTL_MEMBERS" 'input | .members | length == $n and ([.[] | select(.role == "leader")] | length) == 1' >/dev/null || { echo "not every member registered with one leader: $cluster"; exit 1; }
