# shellcheck shell=sh
# `file`. Inputs: HACTL_PATH; HACTL_WANT_SHA, HACTL_DIFF_LIMIT (probe); HACTL_STATE
# (present|absent), HACTL_WRITE (yes: write HACTL_CONTENT_B64; no: manage attributes only), HACTL_OWNER, HACTL_GROUP,
# HACTL_MODE (apply).
#
# Never through a symbolic link: a link at the path is `kind other` (refused, or removed itself for
# `absent`). The temporary file is made where nobody but root can touch it: in the file's
# directory when only root can change that, else (a directory a service user owns, such as
# /etc/patroni) in a private directory made in the nearest directory above it that only root can
# change, then renamed into place. A directory the file's own owner owns (postgres's TLS directory
# on a data volume) is written by that user alone: no root crossing, whatever filesystem it is on.

hactl_probe() {
  if [ -L "$HACTL_PATH" ]; then
    echo "kind other"
    return 0
  fi
  hactl_probe_path
}

# hactl_no_link: refuses a symbolic link at the path.
hactl_no_link() {
  if [ -L "$HACTL_PATH" ]; then
    echo "$HACTL_PATH is a symbolic link: refusing to write through it" >&2
    return 1
  fi
}

# hactl_staging DIR: prints where the temporary file goes, on DIR's filesystem, where only root
# can change anything: `shared DIR` itself, or `private PATH`, a new private directory in the
# nearest directory above DIR that only root can change (each directory between must be no link).
# What a service user owns between them (postgres's home above its TLS directory) could still be
# swapped between this check and the rename: the last name is always hactl's.
hactl_staging() {
  if hactl_trusted_dir "$1" 2>/dev/null; then
    echo "shared $1"
    return 0
  fi
  anchor=$1
  while :; do
    if [ -L "$anchor" ]; then
      echo "refusing to write $HACTL_PATH: $anchor is a symbolic link another user can change" >&2
      return 1
    fi
    if [ "$anchor" = / ] || [ "$anchor" = . ]; then
      echo "refusing to write $HACTL_PATH: no directory above $1 is root's alone" >&2
      return 1
    fi
    anchor=$(dirname -- "$anchor")
    hactl_trusted_dir "$anchor" 2>/dev/null && break
  done
  if [ "$(stat -c %d -- "$anchor")" != "$(stat -c %d -- "$1")" ]; then
    echo "refusing to write $HACTL_PATH: $1 is another user's, on another filesystem than $anchor" >&2
    return 1
  fi
  private=$(mktemp -d "$anchor/.hactl.XXXXXX") || return 1
  echo "private $private"
}

# hactl_owners_dir DIR: DIR belongs to $HACTL_OWNER, a user other than root.
hactl_owners_dir() {
  [ -n "${HACTL_OWNER:-}" ] || return 1
  uid=$(id -u -- "$HACTL_OWNER" 2>/dev/null) || return 1
  [ "$uid" != 0 ] && [ "$(stat -c %u -- "$1")" = "$uid" ]
}

# hactl_write_as_owner: the content, written as $HACTL_OWNER to a temporary file in its own
# directory, given its attributes (HACTL_GROUP must be one of the owner's groups) and renamed into
# place, all by that user: root touches nothing in a directory another user controls.
hactl_write_as_owner() {
  # shellcheck disable=SC2016 # expanded by the owner's shell, values from its environment
  printf '%s' "$HACTL_CONTENT_B64" | base64 -d | hactl_as_user "$HACTL_OWNER" HACTL_PATH HACTL_GROUP HACTL_MODE -- sh -c '
    tmp=$(mktemp "$(dirname -- "$HACTL_PATH")/.hactl.XXXXXX") || exit 1
    fail() { rm -f "$tmp"; exit 1; }
    cat > "$tmp" || fail
    if [ -f "$HACTL_PATH" ] && [ ! -L "$HACTL_PATH" ]; then
      [ -n "$HACTL_GROUP" ] || chgrp --reference="$HACTL_PATH" "$tmp" || fail
      chmod --reference="$HACTL_PATH" "$tmp" || fail
    else
      chmod 0644 "$tmp" || fail
    fi
    [ -z "$HACTL_GROUP" ] || chgrp "$HACTL_GROUP" "$tmp" || fail
    [ -z "$HACTL_MODE" ] || chmod "$HACTL_MODE" "$tmp" || fail
    mv -f -T "$tmp" "$HACTL_PATH" || fail'
}

hactl_apply() {
  if [ "$HACTL_STATE" = absent ]; then
    rm -f "$HACTL_PATH"
    return
  fi
  hactl_no_link || return 1
  dir=$(dirname -- "$HACTL_PATH")
  [ -d "$dir" ] || { echo "directory $dir does not exist" >&2; return 1; }
  if [ "$HACTL_WRITE" != yes ]; then
    hactl_trusted_dir "$dir" || return 1
    hactl_set_attrs "$HACTL_PATH" "$HACTL_PATH" 0644
    return
  fi
  if ! hactl_trusted_dir "$dir" 2>/dev/null && hactl_owners_dir "$dir"; then
    hactl_write_as_owner
    return
  fi
  staging=$(hactl_staging "$dir") || return 1
  case $staging in
    "private "*)
      private=${staging#private }
      tmp=$private/file
      trap 'rm -rf "$private"' EXIT
      ;;
    *)
      private=""
      tmp=$(mktemp "$dir/.hactl.XXXXXX") || return 1
      trap 'rm -f "$tmp"' EXIT
      ;;
  esac
  printf '%s' "$HACTL_CONTENT_B64" | base64 -d > "$tmp" || return 1
  hactl_no_link || return 1
  hactl_set_attrs "$tmp" "$HACTL_PATH" 0644 || return 1
  # -T: a directory or a link to one swapped in at the path is never moved into.
  mv -f -T "$tmp" "$HACTL_PATH" || return 1
  [ -z "$private" ] || rmdir "$private" || return 1
  trap - EXIT
}
