# shellcheck shell=sh
# Helpers shared by every module script (prepended to it; see modules::script).

# hactl_probe_path: what is at $HACTL_PATH: `kind absent|file|directory|other`, then for what exists
# `attrs OWNER GROUP MODE`, for a file `sha HEX` and, when it differs from $HACTL_WANT_SHA and is
# at most $HACTL_DIFF_LIMIT bytes, `old BASE64`.
hactl_probe_path() {
  if [ -f "$HACTL_PATH" ]; then
    echo "kind file"
  elif [ -d "$HACTL_PATH" ]; then
    echo "kind directory"
  elif [ -e "$HACTL_PATH" ] || [ -L "$HACTL_PATH" ]; then
    echo "kind other"
    return 0
  else
    echo "kind absent"
    return 0
  fi
  stat -c 'attrs %U %G %a' "$HACTL_PATH" || return 1
  [ -f "$HACTL_PATH" ] || return 0
  # Read without following a link swapped in since the test above.
  sum=$(dd if="$HACTL_PATH" iflag=nofollow status=none | sha256sum) || return 1
  sum=${sum%% *}
  echo "sha $sum"
  if [ "$sum" != "${HACTL_WANT_SHA:-}" ] && [ "$(stat -c %s "$HACTL_PATH")" -le "${HACTL_DIFF_LIMIT:-0}" ]; then
    printf 'old '
    dd if="$HACTL_PATH" iflag=nofollow status=none | base64 -w0 || return 1
    echo
  fi
}

# hactl_set_attrs TARGET REFERENCE DEFAULT_MODE: owner, group and mode of TARGET from $HACTL_OWNER,
# $HACTL_GROUP and $HACTL_MODE; what they leave unset comes from REFERENCE when it exists, else
# DEFAULT_MODE.
hactl_set_attrs() {
  if [ -e "$2" ]; then
    chown --reference="$2" "$1" && chmod --reference="$2" "$1" || return 1
  else
    chmod "$3" "$1" || return 1
  fi
  if [ -n "${HACTL_OWNER:-}${HACTL_GROUP:-}" ]; then
    chown "${HACTL_OWNER:-}${HACTL_GROUP:+:$HACTL_GROUP}" "$1" || return 1
  fi
  if [ -n "${HACTL_MODE:-}" ]; then
    chmod "$HACTL_MODE" "$1" || return 1
  fi
}

# hactl_once KEY COMMAND...: runs a read-only COMMAND once per probe or gate batch, its parts
# (which run side by side) sharing its output, stderr and exit code; a part that asks while it
# runs waits for it. Outside those batches (an apply) it simply runs COMMAND.
hactl_once() {
  hactl_key=$1
  shift
  if [ -z "${hactl_dir:-}" ]; then
    "$@"
    return
  fi
  hactl_f="$hactl_dir/once-$hactl_key"
  (
    flock 9 || exit 1
    [ -e "$hactl_f.rc" ] || {
      "$@" >"$hactl_f" 2>"$hactl_f.err"
      echo $? >"$hactl_f.rc"
    }
  ) 9>"$hactl_f.lock" || return 1
  cat "$hactl_f"
  cat "$hactl_f.err" >&2
  return "$(cat "$hactl_f.rc")"
}

# hactl_as_user USER NAME... -- COMMAND...: runs COMMAND as USER (its uid, primary group and
# groups, its HOME, in /, no new privileges) with PATH, LANG, LC_ALL and the variables NAME... as its only
# environment: root never runs code a less privileged user can change, and values stay in the
# environment, never on a command line. Fails when USER does not exist.
hactl_as_user() {
  hactl_user=$1
  shift
  hactl_keep=" PATH LANG LC_ALL "
  while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
    hactl_keep="$hactl_keep$1 "
    shift
  done
  [ "$#" -gt 0 ] && shift
  hactl_home=$(getent passwd "$hactl_user" | cut -d: -f6)
  [ -n "$hactl_home" ] || { echo "there is no user $hactl_user on this host" >&2; return 1; }
  (
    # shellcheck disable=SC2013 # names, one word each
    for hactl_name in $(awk 'BEGIN { for (k in ENVIRON) if (k ~ /^[A-Za-z_][A-Za-z0-9_]*$/) print k }'); do
      case $hactl_keep in
        *" $hactl_name "*) ;;
        *) unset "$hactl_name" ;;
      esac
    done
    HOME=$hactl_home
    export HOME
    cd / || exit 1
    exec setpriv --reuid="$hactl_user" --regid="$(id -g "$hactl_user")" --init-groups --no-new-privs -- "$@"
  )
}

# hactl_trusted_dir DIR [strict]: DIR and every directory above it belong to root (or to the
# caller) and nobody else can write them (a sticky directory such as /tmp excepted), so nobody
# else can swap anything on that path; a symbolic link on it must be root's too, and where it
# leads is checked the same way. With `strict`, any symbolic link on the path is refused.
# Prints why not on stderr.
hactl_trusted_dir() {
  hactl_trusted_chain "$1" "${2:-}" || return 1
  [ "${2:-}" = strict ] && return 0
  hactl_real=$(readlink -f -- "$1") || { echo "$1 does not resolve" >&2; return 1; }
  [ "$hactl_real" = "$1" ] || hactl_trusted_chain "$hactl_real" strict
}

# hactl_trusted_chain PATH [strict]: hactl_trusted_dir's test of PATH and its parents as written.
hactl_trusted_chain() {
  hactl_p=$1
  hactl_me=$(id -u)
  while :; do
    if [ -L "$hactl_p" ] && [ "${2:-}" = strict ]; then
      echo "$hactl_p is a symbolic link (refusing to follow it)" >&2
      return 1
    fi
    if [ -e "$hactl_p" ] || [ -L "$hactl_p" ]; then
      hactl_st=$(stat -c '%u %g %a %U' -- "$hactl_p") || return 1
      # shellcheck disable=SC2086 # four words
      set -- "$hactl_p" "${2:-}" $hactl_st
      if [ "$3" != 0 ] && [ "$3" != "$hactl_me" ]; then
        echo "$hactl_p belongs to $6, not to root (refusing to write through it)" >&2
        return 1
      fi
      hactl_mode=$((0$5))
      if [ ! -L "$hactl_p" ] && [ $((hactl_mode & 01000)) = 0 ] &&
        { [ $((hactl_mode & 02)) != 0 ] || { [ $((hactl_mode & 020)) != 0 ] && [ "$4" != 0 ]; }; }; then
        echo "$hactl_p can be written by others than root (mode $5; refusing to write through it)" >&2
        return 1
      fi
      set -- "$1" "$2"
    fi
    [ "$hactl_p" = / ] && return 0
    case $hactl_p in
      /*) ;;
      *) echo "$hactl_p is not an absolute path" >&2; return 1 ;;
    esac
    hactl_p=$(dirname -- "$hactl_p")
  done
}
