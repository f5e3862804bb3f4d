# shellcheck shell=sh
# `rabbitmq_user`. Inputs: HACTL_USER, HACTL_STATE (present|absent), HACTL_PASSWORD (never an
# argument: its salted hash is imported, see hactl_rabbitmq_set_password), HACTL_SET_TAGS (yes|no), HACTL_TAGS (one a line),
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

# Bytes from hex digits ($1), through octal escapes (dash's printf has no \\x).
hactl_unhex() {
  hactl_hex=$1
  while [ -n "$hactl_hex" ]; do
    hactl_pair=${hactl_hex%"${hactl_hex#??}"}
    hactl_hex=${hactl_hex#??}
    # shellcheck disable=SC2059
    printf "\\$(printf '%03o' "$((0x$hactl_pair))")"
  done
}

# HACTL_PASSWORD as RabbitMQ stores it: base64(salt + sha256(salt + password)), a fresh 4-byte salt.
hactl_rabbitmq_hash() {
  salt=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
  digest=$({ hactl_unhex "$salt"; printf '%s' "$HACTL_PASSWORD"; } | sha256sum | cut -c1-64)
  { hactl_unhex "$salt"; hactl_unhex "$digest"; } | base64 | tr -d '\n'
}

# Creates the user or sets its password, keeping its tags: its salted hash imported as definitions
# (a file only the rabbitmq user reads, removed after). rabbitmqctl's add_user and change_password
# take the password as an argument (seen by every process) or, before RabbitMQ 4, on stdin, which
# RabbitMQ 4's CLI never reads.
hactl_rabbitmq_set_password() {
  tags=$(hactl_rabbitmq_users | jq -c --arg u "$HACTL_USER" 'map(select(.user == $u) | .tags) | first // []
    | if type == "string" then split(",") | map(select(. != "")) else . end') || return 1
  defs=$(mktemp /var/lib/rabbitmq/hactl-user.XXXXXX) || return 1
  chown rabbitmq: "$defs" && chmod 0400 "$defs" &&
    jq -n --arg name "$HACTL_USER" --arg hash "$(hactl_rabbitmq_hash)" --argjson tags "$tags" \
      '{users: [{name: $name, password_hash: $hash, hashing_algorithm: "rabbit_password_hashing_sha256", tags: $tags, limits: {}}]}' >"$defs" &&
    rabbitmqctl -q import_definitions "$defs" >/dev/null
  set_status=$?
  rm -f "$defs"
  return $set_status
}

hactl_apply() {
  rabbitmqctl -q await_startup --timeout 120 || return 1
  if [ "$HACTL_STATE" = absent ]; then
    hactl_rabbitmq_user_exists || return 0
    rabbitmqctl -q delete_user "$HACTL_USER"
    return
  fi
  if ! hactl_rabbitmq_password_ok "$HACTL_USER"; then
    hactl_rabbitmq_set_password || return 1
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
