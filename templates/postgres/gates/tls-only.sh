# shellcheck shell=sh
# PostgreSQL admits another host over TLS only (a plain connection is refused).
# HACTL_PASSWORD: the replicator's password; HACTL_PSQL: psql; HACTL_HOST: this node's address.
export PGPASSWORD="$HACTL_PASSWORD" PGCONNECT_TIMEOUT=5
q() { PGSSLMODE=$1 "$HACTL_PSQL" -h "$HACTL_HOST" -U replicator -d postgres -XAtc 'select ssl from pg_stat_ssl where pid = pg_backend_pid()' 2>&1; }
{ out=$(q require) && [ "$out" = t ]; } || { echo "over TLS: $out"; exit 1; }
if out=$(q disable); then echo "a plain connection was admitted"; exit 1; fi
case $out in *"no encryption"*) ;; *) echo "a plain connection failed otherwise: $out"; exit 1 ;; esac
