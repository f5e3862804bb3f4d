# shellcheck shell=sh
# `rabbitmq_user`. Inputs: HACTL_USER, HACTL_PASSWORD (given to rabbitmqctl on stdin, never as an
# argument), HACTL_PERMISSIONS (one `VHOST<TAB>CONFIGURE<TAB>WRITE<TAB>READ` a line).

hactl_probe() {
  hactl_rabbitmq_status
  if ! users=$(rabbitmqctl -q list_users --formatter json 2>/dev/null); then
    return 0
  fi
  printf 'users %s\n' "$(printf '%s' "$users" | tr -d '\n')"
  if printf '%s' "$HACTL_PASSWORD" | rabbitmqctl -q authenticate_user "$HACTL_USER" >/dev/null 2>&1; then
    echo "password ok"
  else
    echo "password differs"
  fi
  if perms=$(rabbitmqctl -q list_user_permissions --formatter json "$HACTL_USER" 2>/dev/null); then
    printf 'permissions %s\n' "$(printf '%s' "$perms" | tr -d '\n')"
  fi
}

hactl_apply() {
  rabbitmqctl -q await_startup --timeout 120 || return 1
  if ! printf '%s' "$HACTL_PASSWORD" | rabbitmqctl -q authenticate_user "$HACTL_USER" >/dev/null 2>&1; then
    if ! printf '%s' "$HACTL_PASSWORD" | rabbitmqctl -q add_user "$HACTL_USER" >/dev/null 2>&1; then
      printf '%s' "$HACTL_PASSWORD" | rabbitmqctl -q change_password "$HACTL_USER" || return 1
    fi
  fi
  tab=$(printf '\t')
  printf '%s\n' "$HACTL_PERMISSIONS" | while IFS="$tab" read -r vhost configure write read; do
    [ -n "$vhost" ] || continue
    rabbitmqctl -q set_permissions -p "$vhost" "$HACTL_USER" "$configure" "$write" "$read" || exit 1
  done
}
