# shellcheck shell=sh
# Through the LB, the primary port reaches the writable primary and the replicas port a replica.
# HACTL_PASSWORD, HACTL_PSQL, HACTL_USER, HACTL_DB: the airflow database's login and psql;
# HACTL_PRIMARY_PORT, HACTL_REPLICAS_PORT: the LB's ports.
export PGPASSWORD="$HACTL_PASSWORD" PGOPTIONS='-c client_min_messages=warning'
q() { port=$1; shift; "$HACTL_PSQL" -h 127.0.0.1 -p "$port" -U "$HACTL_USER" -d "$HACTL_DB" -XqtA -v ON_ERROR_STOP=1 "$@" 2>&1; }
# One connection: whether it is the primary, then a write (which a replica refuses).
out=$(q "$HACTL_PRIMARY_PORT" -c 'select pg_is_in_recovery()' -c 'create table if not exists hactl_probe(id int primary key, at timestamptz)' -c 'insert into hactl_probe values (1, now()) on conflict (id) do update set at = now()')
rc=$?
if [ "$rc" != 0 ] || [ "$out" != f ]; then
  [ "$(printf '%s\n' "$out" | head -n1)" = t ] && { echo "5000 is not the primary"; exit 1; }
  echo "through 5000: $out"; exit 1
fi
{ out=$(q "$HACTL_REPLICAS_PORT" -c 'select pg_is_in_recovery()') && [ "$out" = t ]; } || { echo "5001 is not a replica: $out"; exit 1; }
