# shellcheck shell=sh
# A file transformed by an awk program (lineinfile, hosts). Inputs: HACTL_PATH, HACTL_AWK (the
# program; the values it works with come from the environment through ENVIRON, never its text).

hactl_probe() {
  tmp=$(mktemp) || return 1
  trap 'rm -f "$tmp"' EXIT
  if [ ! -f "$HACTL_PATH" ]; then
    awk "$HACTL_AWK" </dev/null > "$tmp" || return 1
    echo "state absent"
  else
    awk "$HACTL_AWK" "$HACTL_PATH" > "$tmp" || return 1
    if cmp -s "$tmp" "$HACTL_PATH"; then
      echo "state same"
      return 0
    fi
    echo "state differs"
    printf 'old '
    base64 -w0 < "$HACTL_PATH" || return 1
    echo
  fi
  printf 'new '
  base64 -w0 < "$tmp" || return 1
  echo
}

# Transforms into a temporary file beside the original, keeps owner and mode, renames (only when
# something changed).
hactl_apply() {
  dir=$(dirname "$HACTL_PATH")
  if [ ! -f "$HACTL_PATH" ]; then
    [ -d "$dir" ] && : > "$HACTL_PATH" || return 1
  fi
  tmp=$(mktemp "$dir/.hactl.XXXXXX") || return 1
  trap 'rm -f "$tmp"' EXIT
  awk "$HACTL_AWK" "$HACTL_PATH" > "$tmp" || return 1
  chown --reference="$HACTL_PATH" "$tmp" && chmod --reference="$HACTL_PATH" "$tmp" || return 1
  if ! cmp -s "$tmp" "$HACTL_PATH"; then
    mv -f "$tmp" "$HACTL_PATH" || return 1
  fi
}
