# shellcheck shell=sh
# Patroni's unsafe endpoints refuse a caller without credentials and accept its own.
# HACTL_CACERT: the cluster CA; HACTL_URL: this node's Patroni /restart; HACTL_USER,
# HACTL_PASSWORD: the REST API's credentials.
ask() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$HACTL_CACERT" -XDELETE "$@" "$HACTL_URL"; }
{ code=$(ask) && [ "$code" = 401 ]; } || { echo "DELETE /restart without credentials answered $code"; exit 1; }
code=$(printf 'user = "%s"\n' "$(printf '%s:%s' "$HACTL_USER" "$HACTL_PASSWORD" | sed 's/[\\"]/\\&/g')" | ask -K -)
case $code in 200|404) ;; *) echo "DELETE /restart with the credentials answered $code"; exit 1 ;; esac
