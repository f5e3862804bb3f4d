# shellcheck shell=sh
# The stats page asks for its password.
# HACTL_URL: the stats page (https with haproxy_stats_tls); HACTL_CA: the cluster CA, which its
# certificate must come from.
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$HACTL_CA" "$HACTL_URL") || exit 1
[ "$code" = 401 ] || { echo "stats without a password answered $code"; exit 1; }
