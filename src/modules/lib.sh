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
  sum=$(sha256sum < "$HACTL_PATH") || return 1
  sum=${sum%% *}
  echo "sha $sum"
  if [ "$sum" != "${HACTL_WANT_SHA:-}" ] && [ "$(stat -c %s "$HACTL_PATH")" -le "${HACTL_DIFF_LIMIT:-0}" ]; then
    printf 'old '
    base64 -w0 < "$HACTL_PATH" || return 1
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
