# shellcheck shell=sh
# `assert`. Inputs: HACTL_CHECK (read-only shell code, run with eval in a subshell), HACTL_AFTER
# (a path: checked only once it exists; empty: always).

hactl_probe() {
  if [ -n "$HACTL_AFTER" ] && [ ! -e "$HACTL_AFTER" ]; then
    echo "holds later"
    return 0
  fi
  if out=$( (eval "$HACTL_CHECK") 2>&1 </dev/null); then
    echo "holds yes"
  else
    echo "holds no"
    printf '%s\n' "$out" | sed -n '$s/^/why /p'
  fi
}

hactl_apply() {
  :
}
