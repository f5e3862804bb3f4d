# shellcheck shell=sh
# `user`. Inputs: HACTL_LOGIN; HACTL_STATE (present|absent), HACTL_UID, HACTL_PRIMARY,
# HACTL_GROUPS (comma-separated), HACTL_HOME, HACTL_SHELL (empty: leave as is), HACTL_SYSTEM
# (yes|no) (apply).

hactl_probe() {
  if ! entry=$(getent passwd "$HACTL_LOGIN"); then
    echo "passwd -"
    return 0
  fi
  echo "passwd $entry"
  echo "group $(id -gn "$HACTL_LOGIN")"
  echo "groups $(id -Gn "$HACTL_LOGIN" | cut -s -d' ' -f2- | tr ' ' '\n' | sort | tr '\n' ' ')"
}

hactl_apply() {
  if [ "$HACTL_STATE" = absent ]; then
    userdel -- "$HACTL_LOGIN"
    return
  fi
  set --
  if [ -n "$HACTL_UID" ]; then set -- "$@" -u "$HACTL_UID"; fi
  if [ -n "$HACTL_PRIMARY" ]; then set -- "$@" -g "$HACTL_PRIMARY"; fi
  if [ -n "$HACTL_GROUPS" ]; then set -- "$@" -G "$HACTL_GROUPS"; fi
  if [ -n "$HACTL_HOME" ]; then set -- "$@" -d "$HACTL_HOME"; fi
  if [ -n "$HACTL_SHELL" ]; then set -- "$@" -s "$HACTL_SHELL"; fi
  if getent passwd "$HACTL_LOGIN" >/dev/null; then
    usermod "$@" -- "$HACTL_LOGIN"
  elif [ "$HACTL_SYSTEM" = yes ]; then
    useradd --system "$@" -- "$HACTL_LOGIN"
  else
    useradd --create-home "$@" -- "$HACTL_LOGIN"
  fi
}
