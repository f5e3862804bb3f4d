# shellcheck shell=sh
# HAProxy's stats page refuses a client without its password and answers admin with it; its
# socket is root's alone.
# HACTL_URL: the stats page (https with haproxy_stats_tls); HACTL_CA: the cluster CA, which its
# certificate must come from; HACTL_AUTH: `admin:PASSWORD` in base64.
url=$HACTL_URL
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$HACTL_CA" "$url")
[ "$code" = 401 ] || { echo "without the password: HTTP $code"; exit 1; }
code=$(printf 'Authorization: Basic %s\n' "$HACTL_AUTH" | curl -s -o /dev/null -w '%{http_code}' --cacert "$HACTL_CA" -H @- "$url")
[ "$code" = 200 ] || { echo "with the password: HTTP $code"; exit 1; }
[ "$(stat -c %a:%U /run/haproxy/admin.sock)" = 600:root ] || { echo "admin.sock is $(stat -c %a:%U /run/haproxy/admin.sock)"; exit 1; }
