# shellcheck shell=sh
# Every inventory node resolves to its address.
# HACTL_HOSTS: one `NAME ADDRESS` line per inventory node.
printf '%s\n' "$HACTL_HOSTS" | while read -r h addr; do
  [ -n "$h" ] || continue
  [ "$(getent ahostsv4 "$h" | awk 'NR==1 {print $1}')" = "$addr" ] || { echo "$h does not resolve to $addr"; exit 1; }
done
