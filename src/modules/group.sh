# shellcheck shell=sh
# `group`. Inputs: HACTL_NAME; HACTL_STATE (present|absent), HACTL_GID (empty: any),
# HACTL_SYSTEM (yes|no) (apply).

hactl_probe() {
  if entry=$(getent group "$HACTL_NAME"); then
    echo "group $entry"
  else
    echo "group -"
  fi
}

hactl_apply() {
  if [ "$HACTL_STATE" = absent ]; then
    groupdel -- "$HACTL_NAME"
    return
  fi
  set --
  if [ -n "$HACTL_GID" ]; then set -- "$@" -g "$HACTL_GID"; fi
  if getent group "$HACTL_NAME" >/dev/null; then
    groupmod "$@" -- "$HACTL_NAME"
  elif [ "$HACTL_SYSTEM" = yes ]; then
    groupadd --system "$@" -- "$HACTL_NAME"
  else
    groupadd "$@" -- "$HACTL_NAME"
  fi
}
