# shellcheck shell=sh
# The stats page asks for its password.
# HACTL_PORT: the stats page's port.
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HACTL_PORT/") || exit 1
[ "$code" = 401 ] || { echo "stats without a password answered $code"; exit 1; }
