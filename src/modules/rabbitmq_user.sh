# shellcheck shell=sh
# `rabbitmq_user`. Inputs: HACTL_USER, HACTL_STATE (present|absent), HACTL_PASSWORD (given to
# rabbitmqctl on stdin, never as an argument), HACTL_SET_TAGS (yes|no), HACTL_TAGS (one a line),
# HACTL_PERMISSIONS (one `VHOST<TAB>CONFIGURE<TAB>WRITE<TAB>READ` a line).

hactl_probe() {
  hactl_rabbitmq_status
  if ! users=$(hactl_once list_users rabbitmqctl -q list_users --formatter json 2>/dev/null); then
    return 0
  fi
  printf 'user %s\n' "$HACTL_USER"
  printf 'users %s\n' "$(printf '%s' "$users" | tr -d '\n')"
  [ "$HACTL_STATE" = present ] || return 0
  if printf '%s' "$HACTL_PASSWORD" | rabbitmqctl -q authenticate_user "$HACTL_USER" >/dev/null 2>&1; then
    echo "password ok"
  else
    echo "password differs"
  fi
  if perms=$(rabbitmqctl -q list_user_permissions --formatter json "$HACTL_USER" 2>/dev/null); then
    printf 'permissions %s\n' "$(printf '%s' "$perms" | tr -d '\n')"
  fi
}

# Whether the user exists (list_users' first column; -q prints no header).
hactl_rabbitmq_user_exists() {
  rabbitmqctl -q list_users --no-table-headers 2>/dev/null | cut -f1 | grep -qxF -- "$HACTL_USER"
}

hactl_apply() {
  rabbitmqctl -q await_startup --timeout 120 || return 1
  if [ "$HACTL_STATE" = absent ]; then
    hactl_rabbitmq_user_exists || return 0
    rabbitmqctl -q delete_user "$HACTL_USER"
    return
  fi
  if ! printf '%s' "$HACTL_PASSWORD" | rabbitmqctl -q authenticate_user "$HACTL_USER" >/dev/null 2>&1; then
    if ! printf '%s' "$HACTL_PASSWORD" | rabbitmqctl -q add_user "$HACTL_USER" >/dev/null 2>&1; then
      printf '%s' "$HACTL_PASSWORD" | rabbitmqctl -q change_password "$HACTL_USER" || return 1
    fi
  fi
  if [ "$HACTL_SET_TAGS" = yes ]; then
    # One argument per tag (a line each), no word splitting or globbing beyond that.
    old_ifs=$IFS
    IFS='
'
    set -f
    # shellcheck disable=SC2086
    set -- $HACTL_TAGS
    set +f
    IFS=$old_ifs
    rabbitmqctl -q set_user_tags "$HACTL_USER" "$@" || return 1
  fi
  tab=$(printf '\t')
  printf '%s\n' "$HACTL_PERMISSIONS" | while IFS="$tab" read -r vhost configure write read; do
    [ -n "$vhost" ] || continue
    # Not the loop's stdin: rabbitmqctl would read the lines still to come.
    rabbitmqctl -q set_permissions -p "$vhost" "$HACTL_USER" "$configure" "$write" "$read" </dev/null || exit 1
  done
}
