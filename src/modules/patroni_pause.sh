# shellcheck shell=sh
# `patroni_pause`. Inputs: HACTL_PAUSED (yes|no: the pause wanted); and patroni.sh's
# (HACTL_APIS: the members' APIs).

# The first member's API that answers: `api URL` and `member JSON` (GET /patroni, one request to
# each API tried), or `member -`.
hactl_probe() {
  printf '%s\n' "$HACTL_APIS" | {
    while IFS= read -r url; do
      if [ -n "$url" ] && state=$(hactl_curl -sf --max-time 3 "$url/patroni"); then
        printf 'api %s\nmember %s\n' "$url" "$(printf '%s' "$state" | tr -d '\n')"
        exit 0
      fi
    done
    echo "member -"
  }
}

# Pauses or resumes the cluster through the first member that answers, and waits until that
# member reports it.
hactl_apply() {
  api=$(hactl_api) || { echo "no Patroni member's REST API answers" >&2; return 1; }
  if [ "$HACTL_PAUSED" = yes ]; then body='{"pause": true}' test='.pause == true'; else body='{"pause": false}' test='.pause != true'; fi
  hactl_unsafe PATCH config "$body" >/dev/null || { echo "Patroni refused $body (PATCH /config at $api)" >&2; return 1; }
  hactl_wait_member 30 "$test" || { echo "Patroni at $api does not report $body 30 s later" >&2; return 1; }
}
