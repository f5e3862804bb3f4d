# shellcheck shell=sh
# HAProxy sees exactly one UP server in the primary backend.
up=$(echo "show servers state pg_primary" | socat stdio /run/haproxy/admin.sock | awk 'NR > 2 && $6 == 2' | wc -l)
[ "$up" -eq 1 ] || { echo "UP servers in pg_primary: $up"; exit 1; }
