# shellcheck shell=sh
# `rabbitmq_user`. Inputs: HACTL_USER, HACTL_STATE (present|absent), HACTL_PASSWORD (given to
# rabbitmqctl on stdin, never as an argument), HACTL_SET_TAGS (yes|no), HACTL_TAGS (one a line),
# HACTL_PERMISSIONS (one `VHOST<TAB>CONFIGURE<TAB>WRITE<TAB>READ` a line).

hactl_probe() {
  hactl_rabbitmq_status
  if ! users=$(hactl_once list_users hactl_rabbitmq_users); then
    return 0
  fi
  printf 'user %s\n' "$HACTL_USER"
  printf 'users %s\n' "$(printf '%s' "$users" | tr -d '\n')"
  [ "$HACTL_STATE" = present ] || return 0
  if hactl_rabbitmq_password_ok "$HACTL_USER"; then
    echo "password ok"
  else
    echo "password differs"
  fi
  if perms=$(hactl_rabbitmq_permissions "$HACTL_USER"); then
    printf 'permissions %s\n' "$(printf '%s' "$perms" | tr -d '\n')"
  fi
}

# Every user with its tags, in list_users' shape (user, tags): the API's list, else rabbitmqctl's.
hactl_rabbitmq_users() {
  if users=$(hactl_rabbitmq_api 'users?columns=name,tags'); then
    printf '%s' "$users" | jq -c 'map({user: .name, tags})'
  else
    rabbitmqctl -q list_users --formatter json 2>/dev/null
  fi
}

# User $1's permissions in list_user_permissions' shape (vhost, configure, write, read).
hactl_rabbitmq_permissions() {
  perms=$(hactl_rabbitmq_api "users/$(hactl_uri "$1")/permissions")
  case $? in
    0) printf '%s' "$perms" | jq -c 'map({vhost, configure, write, read})' ;;
    4) echo '[]' ;;
    *) rabbitmqctl -q list_user_permissions --formatter json "$1" 2>/dev/null ;;
  esac
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
  if ! hactl_rabbitmq_password_ok "$HACTL_USER"; then
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
