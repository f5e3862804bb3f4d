# shellcheck shell=sh
# `postgres_role`. Inputs: HACTL_ROLE, HACTL_PASSWORD, HACTL_DB (empty: no database), HACTL_HOST,
# HACTL_PORT, HACTL_LOGIN_USER, HACTL_LOGIN_PASSWORD, HACTL_TIMEOUT (seconds). Passwords reach psql
# in PGPASSWORD (the environment, never a command line); names and the password reach SQL through
# psql's \getenv and its own quoting (:'literal', :"identifier"), never as text of the script.

hactl_psql() {
  PGCONNECT_TIMEOUT=3 PGPASSWORD="$HACTL_LOGIN_PASSWORD" \
    psql -h "$HACTL_HOST" -p "$HACTL_PORT" -U "$HACTL_LOGIN_USER" -d postgres -X -q -t -A -v ON_ERROR_STOP=1
}

hactl_ask() {
  hactl_psql 2>&1 <<'SQL'
\getenv role HACTL_ROLE
\getenv db HACTL_DB
SELECT 'primary ' || CASE WHEN pg_is_in_recovery() THEN 'no' ELSE 'yes' END;
SELECT 'role ' || CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') THEN 'present' ELSE 'absent' END;
SELECT 'database ' || coalesce((SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :'db'), '-');
SQL
}

# Read-only. Gives a server that does not answer 15 s (an LB with no primary yet, just after a
# node booted) before saying so; where nothing listens on the port yet (the LB is installed later
# in this run), says so at once. An answer from a replica does not count: an LB that has just
# started sends connections to every server until its checks have run, and a replica may not have
# the role yet.
hactl_probe() {
  if ! command -v psql >/dev/null; then
    echo "server -"
    echo "reason the PostgreSQL client is not installed yet"
    return 0
  fi
  tries=15
  until out=$(hactl_ask) && printf '%s\n' "$out" | grep -qx 'primary yes'; do
    tries=$((tries - 1))
    case "$out" in *"Connection refused"*) tries=0 ;; esac
    if [ "$tries" -le 0 ]; then
      echo "server -"
      case "$out" in
        *"primary no"*) echo "reason only a replica answers" ;;
        *) printf 'reason %s\n' "$(printf '%s' "$out" | head -n1)" ;;
      esac
      return 0
    fi
    sleep 1
  done
  echo "server up"
  printf '%s\n' "$out" | grep -v '^primary '
  if hactl_login_on_primary; then
    echo "login ok"
  else
    echo "login fails"
  fi
}

# Whether the role logs in with its password on the primary; tried again (3 times) when the LB
# may have sent the login to a replica that does not have the role yet.
hactl_login_on_primary() {
  tries=3
  while :; do
    answer=$(PGCONNECT_TIMEOUT=3 PGPASSWORD="$HACTL_PASSWORD" psql -h "$HACTL_HOST" -p "$HACTL_PORT" \
      -U "$HACTL_ROLE" -d "${HACTL_DB:-postgres}" -X -t -A -c 'select pg_is_in_recovery()' 2>/dev/null)
    [ "$answer" = f ] && return 0
    tries=$((tries - 1))
    [ "$tries" -le 0 ] && return 1
    sleep 1
  done
}

# Retries until a writable primary takes the statements (through an LB that may still route to a
# replica, or before the cluster has one), then fails with the last error and what it waited for.
hactl_apply() {
  end=$(($(date +%s) + HACTL_TIMEOUT))
  while :; do
    if out=$(hactl_psql 2>&1 <<'SQL'
\getenv role HACTL_ROLE
\getenv pw HACTL_PASSWORD
\getenv db HACTL_DB
SELECT format('CREATE ROLE %I LOGIN', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" LOGIN PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role') WHERE :'db' <> '' AND NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SQL
    ); then
      return 0
    fi
    if [ "$(date +%s)" -ge "$end" ]; then
      echo "no writable primary took the statements at $HACTL_HOST:$HACTL_PORT within ${HACTL_TIMEOUT}s; last error: $out" >&2
      return 1
    fi
    sleep 1
  done
}
