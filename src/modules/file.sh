# shellcheck shell=sh
# `file`. Inputs: HACTL_PATH; HACTL_WANT_SHA, HACTL_DIFF_LIMIT (probe); HACTL_STATE
# (present|absent), HACTL_WRITE (yes: write HACTL_CONTENT_B64; no: manage attributes only), HACTL_OWNER, HACTL_GROUP,
# HACTL_MODE (apply).

hactl_probe() {
  hactl_probe_path
}

hactl_apply() {
  if [ "$HACTL_STATE" = absent ]; then
    rm -f "$HACTL_PATH"
    return
  fi
  if [ "$HACTL_WRITE" != yes ]; then
    hactl_set_attrs "$HACTL_PATH" "$HACTL_PATH" 0644
    return
  fi
  dir=$(dirname "$HACTL_PATH")
  [ -d "$dir" ] || { echo "directory $dir does not exist" >&2; return 1; }
  tmp=$(mktemp "$dir/.hactl.XXXXXX") || return 1
  trap 'rm -f "$tmp"' EXIT
  printf '%s' "$HACTL_CONTENT_B64" | base64 -d > "$tmp" || return 1
  hactl_set_attrs "$tmp" "$HACTL_PATH" 0644 || return 1
  mv -f "$tmp" "$HACTL_PATH" || return 1
  trap - EXIT
}
