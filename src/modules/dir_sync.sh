# shellcheck shell=sh
# `dir_sync`. Inputs: HACTL_DEST; HACTL_EXCLUDE (basename globs, one a line, never probed nor
# removed); HACTL_WANT (`SHA256 PATH` lines, the files wanted); HACTL_DIFF_LIMIT (probe);
# HACTL_FILES (`PATH BASE64` lines), HACTL_DIRS (wanted directories, one a line), HACTL_OWNER,
# HACTL_GROUP, HACTL_MODE (files), HACTL_DIR_MODE (apply).
#
# Never through a symbolic link another user controls: the destination and every directory above
# it must be root's (writable by root alone), the destination itself no link, and a link above it
# root's, leading to directories root's alone (/opt -> /srv/opt), else probe and apply refuse and
# change nothing; find runs with -P, and a link or any other non-file found in the tree is removed
# itself.

# hactl_trusted_dest: the destination is no link and root's alone, and so are the directories
# above it (hactl_trusted_dir, which accepts a root's link leading to root-only directories).
hactl_trusted_dest() {
  if [ -L "$HACTL_DEST" ]; then
    echo "$HACTL_DEST is a symbolic link (refusing to follow it)" >&2
    return 1
  fi
  hactl_trusted_dir "$(dirname -- "$HACTL_DEST")" && hactl_trusted_chain "$HACTL_DEST"
}

# hactl_find_tree ACTION...: find's expression over $HACTL_DEST without the excluded names.
hactl_find_tree() {
  set -f
  old_ifs=$IFS
  IFS='
'
  prune=""
  for pattern in $HACTL_EXCLUDE; do
    prune="$prune${prune:+
-o
}-name
$pattern"
  done
  # shellcheck disable=SC2086 # one find word a line
  if [ -n "$prune" ]; then
    set -- . -mindepth 1 \( $prune \) -prune -o "$@"
  else
    set -- . -mindepth 1 "$@"
  fi
  IFS=$old_ifs
  set +f
  (cd "$HACTL_DEST" && find -P "$@")
}

# Prints `dest absent`, or `dest present`, `root MODE OWNER GROUP`, then `dir MODE OWNER GROUP PATH` and
# `file MODE OWNER GROUP SHA256 PATH` lines, and `old PATH BASE64` for a differing small file.
hactl_probe() {
  hactl_trusted_dest || return 1
  if [ ! -d "$HACTL_DEST" ]; then
    echo "dest absent"
    return 0
  fi
  echo "dest present"
  stat -c 'root %a %U %G' "$HACTL_DEST" || return 1
  hactl_find_tree -type d -printf 'dir %m %u %g %P\n' || return 1
  hactl_find_tree ! -type d ! -type f -printf 'other %P\n' || return 1
  files=$(hactl_find_tree -type f -printf '%m %u %g %s %P\n') || return 1
  [ -n "$files" ] || return 0
  # One sha256sum and one awk for the whole tree (a no-op re-run starts no process per file).
  HACTL_SUMS=$(hactl_find_tree -type f -exec sha256sum {} +) || return 1
  export HACTL_SUMS
  printf '%s\n' "$files" | awk '
    BEGIN {
      n = split(ENVIRON["HACTL_SUMS"], s, "\n")
      for (i = 1; i <= n; i++) sums[substr(s[i], 69)] = substr(s[i], 1, 64)
      n = split(ENVIRON["HACTL_WANT"], w, "\n")
      for (i = 1; i <= n; i++) want[w[i]] = 1
    }
    {
      path = $0
      for (i = 1; i <= 4; i++) sub(/^[^ ]* /, "", path)
      print "file " $1 " " $2 " " $3 " " sums[path] " " path
      if (!((sums[path] " " path) in want) && $4 + 0 <= ENVIRON["HACTL_DIFF_LIMIT"] + 0) print "old " path
    }' | while IFS= read -r line; do
    case $line in
      "old "*)
        printf '%s ' "$line"
        base64 -w0 < "$HACTL_DEST/${line#old }" || exit 1
        echo
        ;;
      *) printf '%s\n' "$line" ;;
    esac
  done
}

# Writes each differing file atomically, removes what is not wanted, sets owner and modes.
hactl_apply() {
  hactl_trusted_dest || return 1
  mkdir -p "$HACTL_DEST" || return 1
  hactl_find_tree ! -type d ! -type f -printf '%P\n' | while read -r path; do
    rm -f "$HACTL_DEST/$path" || exit 1
  done || return 1
  printf '%s\n' "$HACTL_DIRS" | while read -r dir; do
    [ -z "$dir" ] || mkdir -p "$HACTL_DEST/$dir" || exit 1
  done || return 1
  printf '%s\n' "$HACTL_FILES" | while read -r path b64; do
    [ -n "$path" ] || continue
    target="$HACTL_DEST/$path"
    tmp=$(mktemp "$(dirname "$target")/.hactl.XXXXXX") || exit 1
    printf '%s' "$b64" | base64 -d > "$tmp" || { rm -f "$tmp"; exit 1; }
    if [ -f "$target" ] && cmp -s "$tmp" "$target"; then
      rm -f "$tmp"
    else
      chmod "$HACTL_MODE" "$tmp" && mv -f -T "$tmp" "$target" || { rm -f "$tmp"; exit 1; }
    fi
  done || return 1
  wanted_files=$(printf '%s\n' "$HACTL_FILES" | while read -r path _; do echo "$path"; done)
  hactl_find_tree -type f -printf '%P\n' | while read -r path; do
    printf '%s\n' "$wanted_files" | grep -qxF "$path" || rm -f "$HACTL_DEST/$path" || exit 1
  done || return 1
  hactl_find_tree -depth -type d -printf '%P\n' | while read -r dir; do
    printf '%s\n' "$HACTL_DIRS" | grep -qxF "$dir" || rmdir "$HACTL_DEST/$dir" 2>/dev/null || rm -rf "${HACTL_DEST:?}/$dir" || exit 1
  done || return 1
  if [ -n "$HACTL_OWNER$HACTL_GROUP" ]; then
    chown -R -h "$HACTL_OWNER${HACTL_GROUP:+:$HACTL_GROUP}" "$HACTL_DEST" || return 1
  fi
  chmod "$HACTL_DIR_MODE" "$HACTL_DEST" || return 1
  hactl_find_tree -type d -exec chmod "$HACTL_DIR_MODE" {} + || return 1
  hactl_find_tree -type f -exec chmod "$HACTL_MODE" {} +
}
