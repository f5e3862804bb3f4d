# shellcheck shell=sh
# `postgres_password`. Inputs: HACTL_NAMES (the roles, one a line), HACTL_PASSWORD_1... (their
# passwords, in that order), HACTL_OS_USER (the server's superuser, by peer authentication on
# the local socket), HACTL_SOCKET, HACTL_PORT, HACTL_PSQL, HACTL_PYTHON, HACTL_PY (the SCRAM
# side, postgres_password.py), HACTL_TIMEOUT (seconds a replica waits for the primary's change).
# psql runs as HACTL_OS_USER with only the names and verifiers in its environment, which reach
# SQL through \getenv and psql's quoting; passwords stay with python3 (the environment, never a
# command line), and only SCRAM verifiers reach the server.

hactl_pg() {
  hactl_as_user "$HACTL_OS_USER" HACTL_NAMES HACTL_ROLE HACTL_VERIFIER -- \
    "$HACTL_PSQL" -h "$HACTL_SOCKET" -p "$HACTL_PORT" -U "$HACTL_OS_USER" -d postgres -X -q -t -A -v ON_ERROR_STOP=1
}

# `primary yes|no`, then `INDEX|STORED` per role (`absent`: no such role; `none`: no password).
hactl_pg_state() {
  hactl_pg <<'SQL'
\getenv names HACTL_NAMES
SELECT 'primary ' || CASE WHEN pg_is_in_recovery() THEN 'no' ELSE 'yes' END;
SELECT n.i || '|' || CASE WHEN a.oid IS NULL THEN 'absent' ELSE coalesce(a.rolpassword, 'none') END
  FROM unnest(string_to_array(:'names', E'\n')) WITH ORDINALITY AS n(name, i)
  LEFT JOIN pg_authid a ON a.rolname = n.name ORDER BY n.i;
SQL
}

# Read-only: `server -` and a reason where no server answers here (Patroni sets the passwords
# when it bootstraps), else `primary yes|no` and `roleINDEX ok|differs|absent` per role.
hactl_probe() {
  if [ ! -x "$HACTL_PSQL" ] || ! command -v "$HACTL_PYTHON" >/dev/null; then
    echo "server -"
    echo "reason PostgreSQL is not installed yet"
    return 0
  fi
  if ! out=$(hactl_pg_state 2>&1); then
    echo "server -"
    printf 'reason %s\n' "$(printf '%s' "$out" | head -n1)"
    return 0
  fi
  echo "server up"
  printf '%s\n' "$out" | grep '^primary '
  printf '%s\n' "$out" | grep -v '^primary ' | "$HACTL_PYTHON" -I -c "$HACTL_PY" check
}

# The primary stores a new verifier for each role whose password differs; a replica waits
# (HACTL_TIMEOUT) until the primary's change has reached it.
hactl_apply() {
  end=$(($(date +%s) + HACTL_TIMEOUT))
  while :; do
    state=$(hactl_probe) || return 1
    differing=$(printf '%s\n' "$state" | sed -n 's/^role\([0-9]*\) differs$/\1/p')
    [ -n "$differing" ] || return 0
    if printf '%s\n' "$state" | grep -qx 'primary yes'; then
      for i in $differing; do
        HACTL_ROLE=$(printf '%s\n' "$HACTL_NAMES" | sed -n "${i}p")
        HACTL_VERIFIER=$("$HACTL_PYTHON" -I -c "$HACTL_PY" make "$i") || return 1
        export HACTL_ROLE HACTL_VERIFIER
        hactl_pg <<'SQL' || return 1
\getenv role HACTL_ROLE
\getenv verifier HACTL_VERIFIER
ALTER ROLE :"role" PASSWORD :'verifier';
SQL
      done
      unset HACTL_VERIFIER
      return 0
    fi
    if [ "$(date +%s)" -ge "$end" ]; then
      echo "the primary did not set the new passwords within ${HACTL_TIMEOUT}s (is its host in this run, and --forks at least the number of these hosts?): $(printf '%s' "$state" | tr '\n' ' ')" >&2
      return 1
    fi
    sleep 1
  done
}
