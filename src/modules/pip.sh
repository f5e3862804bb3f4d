# shellcheck shell=sh
# `pip`. Inputs: HACTL_VENV; HACTL_NAMES (distribution names, one a line), HACTL_PROBE_PY
# (probe); HACTL_PYTHON, HACTL_REQS (requirements and pip's extra arguments, one a line; empty:
# only the venv) (apply).

hactl_probe() {
  if [ -x "$HACTL_VENV/bin/python" ]; then
    echo "venv yes"
    "$HACTL_VENV/bin/python" -c "$HACTL_PROBE_PY"
  else
    echo "venv no"
  fi
}

hactl_apply() {
  [ -x "$HACTL_VENV/bin/python" ] || "$HACTL_PYTHON" -m venv "$HACTL_VENV" || return 1
  [ -n "$HACTL_REQS" ] || return 0
  set -f
  old_ifs=$IFS
  IFS='
'
  # shellcheck disable=SC2086 # one requirement a line
  set -- $HACTL_REQS
  IFS=$old_ifs
  set +f
  "$HACTL_VENV/bin/python" -m pip install -q --disable-pip-version-check "$@"
}
