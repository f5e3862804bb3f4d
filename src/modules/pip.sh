# shellcheck shell=sh
# `pip`. Inputs: HACTL_VENV, HACTL_CONSTRAINTS (a file on the host, or empty); HACTL_NAMES
# (distribution names, one a line), HACTL_PROBE_PY (probe); HACTL_PYTHON, HACTL_REQS
# (requirements and pip's arguments, one a line; empty: only the venv), HACTL_INDEX_URL (checked
# first when set); HACTL_OWNER (the venv's owner: probe and apply); HACTL_PROBE_USER (who runs the
# venv's python in the probe; empty: the caller).

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
    if [ -n "$HACTL_OWNER" ] && [ -n "$(hactl_foreign)" ]; then
      # Rebuilt by the apply: nothing of it is read or run here.
      echo "foreign yes"
      return 0
    fi
    hactl_strays | sed 's/^/stray /'
    if [ -n "$HACTL_CONSTRAINTS" ]; then
      echo "constraints $(hactl_sha "$HACTL_CONSTRAINTS")"
      echo "stamp $(cat "$HACTL_VENV/.hactl-constraints.sha256" 2>/dev/null || echo -)"
    fi
    if [ -n "$HACTL_PROBE_USER" ]; then
      hactl_as_user "$HACTL_PROBE_USER" HACTL_NAMES -- "$HACTL_VENV/bin/python" -c "$HACTL_PROBE_PY"
    else
      "$HACTL_VENV/bin/python" -c "$HACTL_PROBE_PY"
    fi
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

# hactl_foreign: the first thing in the venv is not its owner's, or is writable by others than its owner
# (never following a symbolic link).
hactl_foreign() {
  find -P "$HACTL_VENV" \( ! -user "$HACTL_OWNER" -o \( ! -type l -perm /022 \) \) -print -quit
}

# hactl_own: the venv made its owner's alone, readable by everyone (links themselves, never what
# they point to).
hactl_own() {
  [ -n "$HACTL_OWNER" ] || return 0
  chown -R -h "$HACTL_OWNER:" "$HACTL_VENV" || return 1
  find -P "$HACTL_VENV" ! -type l -exec chmod go+rX,go-w {} + || return 1
}

# hactl_strays: the `.pth`, sitecustomize and usercustomize files in the venv's site-packages that
# no installed distribution's RECORD lists (every python of the venv runs them at start), one a
# line. Read by the shell: no python of the venv runs.
hactl_strays() {
  for sp in "$HACTL_VENV"/lib/python3*/site-packages; do
    [ -d "$sp" ] || continue
    # Regular files only: a FIFO named RECORD never blocks the read.
    recorded=$(find -P "$sp" -mindepth 2 -maxdepth 2 -path '*.dist-info/RECORD' -type f -exec cat {} + |
      cut -d, -f1 | grep -v /)
    find -P "$sp" -mindepth 1 -maxdepth 1 \( -name '*.pth' -o -name sitecustomize.py -o -name usercustomize.py \) \
      -printf '%f\n' | while IFS= read -r name; do
      printf '%s\n' "$recorded" | grep -qxF -e "$name" || printf '%s\n' "$sp/$name"
    done
  done
}

# hactl_trusted: the interpreter the venv's python leads to, and the home pyvenv.cfg names (where
# its standard library comes from), are root's and writable by root alone: nobody pointed the venv
# at code of theirs.
hactl_trusted() {
  real=$(readlink -f -- "$HACTL_VENV/bin/python") || return 1
  home=$(sed -n 's/^home *= *//p' "$HACTL_VENV/pyvenv.cfg")
  [ -n "$home" ] || { echo "$HACTL_VENV/pyvenv.cfg names no home" >&2; return 1; }
  if ! hactl_trusted_dir "$(dirname -- "$real")" || ! hactl_trusted_dir "$home" ||
    [ -n "$(find -P "$real" \( ! -uid 0 ! -uid "$(id -u)" -o -perm /022 \) -print)" ]; then
    echo "the python of $HACTL_VENV ($real, home $home) is not root's alone: remove the venv and provision again" >&2
    return 1
  fi
}

# A venv something in which is not its owner's alone (an older hactl left it airflow's) is moved
# aside, never run, and removed once a fresh one is made and installed. Made its owner's before any
# python of it runs; refused when something the packages did not install would run at its start.
# Installed with umask 022: what root writes stays readable by the services.
hactl_apply() {
  if [ -d "$HACTL_VENV" ] && [ -n "$HACTL_OWNER" ] && [ -n "$(hactl_foreign)" ]; then
    mv -T -- "$HACTL_VENV" "$HACTL_VENV.foreign-$(date -u +%Y%m%dT%H%M%SZ)" || return 1
  fi
  umask 022
  [ -x "$HACTL_VENV/bin/python" ] || "$HACTL_PYTHON" -m venv "$HACTL_VENV" || return 1
  hactl_own || return 1
  hactl_trusted || return 1
  strays=$(hactl_strays) || return 1
  if [ -n "$strays" ]; then
    echo "files no package installed would run in every python of $HACTL_VENV: $(echo "$strays" | tr '\n' ' ')(look at them, remove them, then provision again)" >&2
    return 1
  fi
  if [ -n "$HACTL_REQS" ]; then
    hactl_pip_install || return 1
  fi
  hactl_own || return 1
  # This run's old venv, and one a failed run left aside.
  rm -rf -- "$HACTL_VENV".foreign-*
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
