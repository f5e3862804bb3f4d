# shellcheck shell=sh
# `file`. Inputs: HACTL_PATH; HACTL_WANT_SHA, HACTL_DIFF_LIMIT (probe); HACTL_STATE
# (present|absent), HACTL_WRITE (yes: write HACTL_CONTENT_B64; no: manage attributes only), HACTL_OWNER, HACTL_GROUP,
# HACTL_MODE (apply).
#
# Never through a symbolic link: a link at the path is `kind other` (refused, or removed itself for
# `absent`). The temporary file is made where nobody but root can touch it: in the file's
# directory when only root can change that, else (a directory a service user owns, such as
# /etc/patroni) in a private directory made in the nearest directory above it that only root can
# change, then renamed into place.

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
