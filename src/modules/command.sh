# shellcheck shell=sh
# `command`. Inputs: HACTL_CMD, HACTL_CREATES, HACTL_REMOVES, HACTL_UNLESS (empty: no such
# guard), HACTL_CHDIR. The command and the unless guard are shell code run with eval in a
# subshell, so their text is never a process's command line (where `ps` would show it).

# `guard satisfied-by-creates|satisfied-by-removes|satisfied-by-unless`, or `guard due`.
hactl_guard() {
  if [ -n "$HACTL_CREATES" ] && [ -e "$HACTL_CREATES" ]; then
    echo "guard satisfied-by-creates"
  elif [ -n "$HACTL_REMOVES" ] && [ ! -e "$HACTL_REMOVES" ]; then
    echo "guard satisfied-by-removes"
  elif [ -n "$HACTL_UNLESS" ] && (eval "$HACTL_UNLESS") >/dev/null 2>&1 </dev/null; then
    echo "guard satisfied-by-unless"
  else
    echo "guard due"
  fi
}

hactl_probe() {
  hactl_guard
}

hactl_apply() {
  [ "$(hactl_guard)" = "guard due" ] || return 0
  if [ -n "$HACTL_CHDIR" ]; then
    cd "$HACTL_CHDIR" || return 1
  fi
  (eval "$HACTL_CMD") </dev/null
}
