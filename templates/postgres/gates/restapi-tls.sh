# shellcheck shell=sh
# Patroni's REST API speaks TLS only (its certificate verified against the cluster CA; plain
# HTTP gets no answer).
# HACTL_CACERT: the cluster CA; HACTL_NAME: this node's inventory name; HACTL_HOST: its address.
curl -sf -o /dev/null --max-time 5 --cacert "$HACTL_CACERT" "https://$HACTL_NAME:8008/patroni" || { echo "no answer over TLS with a certificate from the cluster CA for $HACTL_NAME"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$HACTL_HOST:8008/patroni")
[ "$code" = 000 ] || { echo "plain HTTP was answered ($code)"; exit 1; }
