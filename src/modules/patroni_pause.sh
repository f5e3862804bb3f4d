# shellcheck shell=sh
# `patroni_pause`. Inputs: HACTL_APIS (members' REST APIs, one a line, the first that answers),
# HACTL_PAUSED (yes|no: the pause wanted); and patroni.sh's (HACTL_API is set here).

# The first member's API that answers: `api URL` and `member JSON` (GET /patroni), or `member -`.
hactl_probe() {
  # shellcheck disable=SC2153 # HACTL_APIS (the list) is an input, HACTL_API (the one asked) is set here
  printf '%s\n' "$HACTL_APIS" | while IFS= read -r api; do
    [ -n "$api" ] || continue
    if state=$(curl -sf --max-time 3 "$api/patroni"); then
      printf 'api %s\nmember %s\n' "$api" "$(printf '%s' "$state" | tr -d '\n')"
      exit 0
    fi
  done | grep . || echo "member -"
}

# Pauses or resumes the cluster through the first member that answers, and waits until that
# member reports it.
hactl_apply() {
  HACTL_API=$(hactl_probe | sed -n 's/^api //p')
  [ -n "$HACTL_API" ] || { echo "no Patroni member's REST API answers" >&2; return 1; }
  if [ "$HACTL_PAUSED" = yes ]; then body='{"pause": true}' test='.pause == true'; else body='{"pause": false}' test='.pause != true'; fi
  hactl_unsafe PATCH config "$body" >/dev/null || { echo "Patroni refused $body (PATCH /config at $HACTL_API)" >&2; return 1; }
  hactl_wait_member 30 "$test" || { echo "Patroni at $HACTL_API does not report $body 30 s later" >&2; return 1; }
}
