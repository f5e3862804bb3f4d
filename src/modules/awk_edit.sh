# shellcheck shell=sh
# A file transformed by an awk program (lineinfile, hosts). Inputs: HACTL_PATH, HACTL_AWK (the
# program; the values it works with come from the environment through ENVIRON, never its text).

hactl_probe() {
  # The edited text is kept in a variable (with a sentinel, as $(…) strips trailing newlines):
  # no temporary file, and awk's failure is seen.
  if [ ! -f "$HACTL_PATH" ]; then
    new=$(awk "$HACTL_AWK" </dev/null && echo .) || return 1
    echo "state absent"
  else
    new=$(awk "$HACTL_AWK" "$HACTL_PATH" && echo .) || return 1
    if printf '%s' "${new%.}" | cmp -s - "$HACTL_PATH"; then
      echo "state same"
      return 0
    fi
    echo "state differs"
    printf 'old '
    base64 -w0 < "$HACTL_PATH" || return 1
    echo
  fi
  printf 'new '
  printf '%s' "${new%.}" | base64 -w0 || return 1
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
