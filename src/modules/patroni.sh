# shellcheck shell=sh
# What the `patroni_*` modules share. Inputs: HACTL_API (a member's REST API), HACTL_API_USER and
# HACTL_API_PASSWORD (for the unsafe endpoints; empty where they need none).

# Sends $3 with method $1 to the unsafe endpoint $2, with the credentials through curl's standard
# input (a config line, its quotes and backslashes escaped), never on its command line.
hactl_unsafe() {
  if [ -z "$HACTL_API_USER" ]; then
    curl -sf -X"$1" "$HACTL_API/$2" -d "$3"
    return
  fi
  printf 'user = "%s"\n' "$(printf '%s:%s' "$HACTL_API_USER" "$HACTL_API_PASSWORD" | sed 's/[\\"]/\\&/g')" |
    curl -sf -K - -X"$1" "$HACTL_API/$2" -d "$3"
}

# Waits up to $1 seconds until the member's state (GET /patroni) satisfies the jq test $2.
hactl_wait_member() {
  i=0
  until curl -sf --max-time 5 "$HACTL_API/patroni" | jq -en "input | $2" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -lt "$1" ] || return 1
    sleep 1
  done
}
