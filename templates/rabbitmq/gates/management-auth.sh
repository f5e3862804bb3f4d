# shellcheck shell=sh
# No guest user (where it is to be removed); the management API refuses a client without
# credentials and answers the administrator.
# HACTL_REMOVE_GUEST: non-empty where the guest user is removed; HACTL_URL: /api/whoami on this
# node; HACTL_CACERT: the cluster CA where HACTL_URL is https (verified), else empty;
# HACTL_ADMIN: the administrator's name; HACTL_AUTH: `ADMIN:PASSWORD` in base64.
if [ -n "$HACTL_REMOVE_GUEST" ]; then
  users=$(curl -sf --max-time 5 -K /etc/hactl/rabbitmq-api.curl 'http://127.0.0.1:15672/api/users?columns=name') || { echo "the management API did not answer"; exit 1; }
  printf '%s' "$users" | jq -e 'any(.[]; .name == "guest")' >/dev/null && { echo "the guest user exists"; exit 1; }
fi
url=$HACTL_URL
set --
[ -n "$HACTL_CACERT" ] && set -- --cacert "$HACTL_CACERT"
code=$(curl -s -o /dev/null -w '%{http_code}' "$@" "$url")
[ "$code" = 401 ] || { echo "without credentials: HTTP $code"; exit 1; }
code=$(printf 'Authorization: Basic %s\n' "$HACTL_AUTH" | curl -s -o /dev/null -w '%{http_code}' -H @- "$@" "$url")
[ "$code" = 200 ] || { echo "as $HACTL_ADMIN: HTTP $code"; exit 1; }
