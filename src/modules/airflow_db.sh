# shellcheck shell=sh
# `airflow_db`. Inputs: HACTL_PYTHON (the venv's interpreter), HACTL_DB_URL (the metadata
# database's URL, airflow.cfg's sql_alchemy_conn), HACTL_PROBE_PY (probe); HACTL_AIRFLOW (the
# CLI), HACTL_MIGRATE (yes: migrate; no: wait for another host's migration), HACTL_TIMEOUT
# (seconds: the whole wait), HACTL_UNREACHABLE_GRACE (seconds the database may not answer during
# a wait before the step fails with the reason) (apply); HACTL_USER (who runs the probe's python,
# with HACTL_DB_URL in its environment alone; empty: the caller).

# Prints `head REV` and `version V` then `schema known` with `current REV|-`, or `schema unknown`
# with `reason WHY` (airflow not installed yet, or the database not reachable).
hactl_probe() {
  if [ ! -x "$HACTL_PYTHON" ]; then
    echo "schema unknown"
    echo "reason airflow is not installed yet"
    return 0
  fi
  if [ -n "$HACTL_USER" ]; then
    hactl_as_user "$HACTL_USER" HACTL_DB_URL -- "$HACTL_PYTHON" -c "$HACTL_PROBE_PY"
  else
    "$HACTL_PYTHON" -c "$HACTL_PROBE_PY"
  fi
}

# The probe's `reason` line, when the schema is unknown.
hactl_unreachable_reason() {
  printf '%s\n' "$1" | sed -n 's/^reason //p'
}

hactl_apply() {
  state=$(hactl_probe) || return 1
  if printf '%s\n' "$state" | grep -qx 'schema unknown'; then
    echo "the metadata database does not answer: $(hactl_unreachable_reason "$state")" >&2
    return 1
  fi
  if [ "$HACTL_MIGRATE" = yes ]; then
    "$HACTL_AIRFLOW" db migrate || return 1
  fi
  now=$(date +%s)
  deadline=$((now + HACTL_TIMEOUT))
  answered=$now
  while :; do
    state=$(hactl_probe) || return 1
    head=$(printf '%s\n' "$state" | sed -n 's/^head //p')
    current=$(printf '%s\n' "$state" | sed -n 's/^current //p')
    [ -n "$head" ] && [ "$head" = "$current" ] && return 0
    now=$(date +%s)
    if printf '%s\n' "$state" | grep -qx 'schema unknown'; then
      if [ $((now - answered)) -ge "$HACTL_UNREACHABLE_GRACE" ]; then
        echo "the metadata database has not answered for ${HACTL_UNREACHABLE_GRACE}s: $(hactl_unreachable_reason "$state")" >&2
        return 1
      fi
    else
      answered=$now
    fi
    if [ "$now" -ge "$deadline" ]; then
      echo "the metadata database is not at the installed airflow's revision after ${HACTL_TIMEOUT}s: $(printf '%s' "$state" | tr '\n' ' ')" >&2
      return 1
    fi
    sleep 3
  done
}
