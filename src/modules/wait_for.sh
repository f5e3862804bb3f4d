# shellcheck shell=sh
# `wait_for`. Inputs: HACTL_URL (empty: a TCP port), HACTL_HTTP_PY, HACTL_STATUS, HACTL_HOST,
# HACTL_PORT, HACTL_TIMEOUT (seconds), HACTL_TARGET (for messages).

hactl_ready() {
  if [ -n "$HACTL_URL" ]; then
    python3 -c "$HACTL_HTTP_PY"
  else
    # shellcheck disable=SC2016 # expanded by the bash child, from the environment
    timeout 2 bash -c '</dev/tcp/"$HACTL_HOST"/"$HACTL_PORT"' 2>/dev/null
  fi
}

hactl_probe() {
  if hactl_ready; then echo "ready yes"; else echo "ready no"; fi
}

hactl_apply() {
  end=$(($(date +%s) + HACTL_TIMEOUT))
  until hactl_ready; do
    if [ "$(date +%s)" -ge "$end" ]; then
      echo "timed out waiting for $HACTL_TARGET" >&2
      return 1
    fi
    sleep 1
  done
}
