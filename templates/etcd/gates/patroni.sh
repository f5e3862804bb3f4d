# shellcheck shell=sh
# Patroni reaches etcd, one leader, not paused (where Patroni is installed; stage postgres's
# gate counts the members: a node added in this run has no Patroni yet).
# HACTL_CACERT: the cluster CA; HACTL_URL, HACTL_OTHER_URL: this node's Patroni /cluster over
# either scheme.
systemctl cat patroni.service >/dev/null 2>&1 || exit 0
# Either scheme: stage postgres turns TLS on after this part.
cluster=$(curl -sf --max-time 5 --cacert "$HACTL_CACERT" "$HACTL_URL" || curl -sf --max-time 5 --cacert "$HACTL_CACERT" "$HACTL_OTHER_URL") || { echo "Patroni's REST API did not answer"; exit 1; }
printf '%s' "$cluster" | jq -e '.pause != true' >/dev/null || { echo "the cluster is paused"; exit 1; }
printf '%s' "$cluster" | jq -e '[.members[] | select(.role == "leader")] | length == 1' >/dev/null || { echo "not one leader: $cluster"; exit 1; }
