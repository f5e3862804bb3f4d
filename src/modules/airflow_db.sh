# shellcheck shell=sh
# `airflow_db`. Inputs: HACTL_PYTHON (the venv's interpreter), HACTL_CONFIG (airflow.cfg),
# HACTL_PROBE_PY (probe); HACTL_AIRFLOW (the CLI), HACTL_MIGRATE (yes: migrate; no: wait for
# another host's migration), HACTL_TIMEOUT (seconds) (apply).

# Prints `head REV` and `version V` then `schema known` with `current REV|-`, or `schema unknown`
# with `reason WHY` (airflow not installed yet, or the database not reachable).
hactl_probe() {
  if [ ! -x "$HACTL_PYTHON" ] || [ ! -r "$HACTL_CONFIG" ]; then
    echo "schema unknown"
    echo "reason airflow is not installed and configured yet"
    return 0
  fi
  "$HACTL_PYTHON" -c "$HACTL_PROBE_PY"
}

hactl_apply() {
  if [ "$HACTL_MIGRATE" = yes ]; then
    "$HACTL_AIRFLOW" db migrate || return 1
  fi
  deadline=$(($(date +%s) + HACTL_TIMEOUT))
  while :; do
    state=$(hactl_probe) || return 1
    head=$(printf '%s\n' "$state" | sed -n 's/^head //p')
    current=$(printf '%s\n' "$state" | sed -n 's/^current //p')
    [ -n "$head" ] && [ "$head" = "$current" ] && return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "the metadata database is not at the installed airflow's revision after ${HACTL_TIMEOUT}s: $(printf '%s' "$state" | tr '\n' ' ')" >&2
      return 1
    fi
    sleep 3
  done
}
