# shellcheck shell=sh
# `pip`. Inputs: HACTL_VENV, HACTL_CONSTRAINTS (a file on the host, or empty); HACTL_NAMES
# (distribution names, one a line), HACTL_PROBE_PY (probe); HACTL_PYTHON, HACTL_REQS
# (requirements and pip's arguments, one a line; empty: only the venv), HACTL_INDEX_URL (checked
# first when set), HACTL_OWNER (apply).

# hactl_sha FILE: the file's sha256, or - when it does not exist.
hactl_sha() {
  if [ -f "$1" ]; then
    sum=$(sha256sum < "$1") || return 1
    echo "${sum%% *}"
  else
    echo -
  fi
}

hactl_probe() {
  if [ -x "$HACTL_VENV/bin/python" ]; then
    echo "venv yes"
    echo "owner $(stat -c %U "$HACTL_VENV")"
    if [ -n "$HACTL_CONSTRAINTS" ]; then
      echo "constraints $(hactl_sha "$HACTL_CONSTRAINTS")"
      echo "stamp $(cat "$HACTL_VENV/.hactl-constraints.sha256" 2>/dev/null || echo -)"
    fi
    "$HACTL_VENV/bin/python" -c "$HACTL_PROBE_PY"
  else
    echo "venv no"
  fi
}

# hactl_index_reachable: one clear error when the package index does not answer.
hactl_index_reachable() {
  [ -n "$HACTL_INDEX_URL" ] || return 0
  "$HACTL_PYTHON" - <<'PY'
import os, sys, urllib.request
url = os.environ["HACTL_INDEX_URL"].rstrip("/") + "/pip/"
try:
    urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": "text/html"}), timeout=20).close()
except Exception as e:
    sys.exit(f"the package index {os.environ['HACTL_INDEX_URL']} cannot be reached: {getattr(e, 'reason', e)}")
PY
}

hactl_apply() {
  [ -x "$HACTL_VENV/bin/python" ] || "$HACTL_PYTHON" -m venv "$HACTL_VENV" || return 1
  if [ -n "$HACTL_REQS" ]; then
    hactl_pip_install || return 1
  fi
  if [ -n "$HACTL_OWNER" ]; then
    chown -R "$HACTL_OWNER:" "$HACTL_VENV" || return 1
  fi
}

# hactl_pip_install: the requirements (one a line in HACTL_REQS), resolved against the
# constraints, whose hash is then stamped into the venv.
hactl_pip_install() {
  set -f
  old_ifs=$IFS
  IFS='
'
  # shellcheck disable=SC2086 # one requirement a line
  set -- $HACTL_REQS
  IFS=$old_ifs
  set +f
  hactl_index_reachable || return 1
  "$HACTL_VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" || return 1
  if [ -n "$HACTL_CONSTRAINTS" ]; then
    hactl_sha "$HACTL_CONSTRAINTS" > "$HACTL_VENV/.hactl-constraints.sha256" || return 1
  fi
}
