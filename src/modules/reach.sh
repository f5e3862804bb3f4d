# shellcheck shell=sh
# `reach`. Inputs: HACTL_ENDPOINTS (HOST:PORT, one per line), HACTL_TIMEOUT (seconds the apply
# tries again before it fails).

# `unreachable HOST:PORT WHY` for an endpoint that does not accept a TCP connection from here.
hactl_reach_one() {
  host=${1%:*} port=${1##*:}
  addr=$(getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }')
  if [ -z "$addr" ]; then
    echo "unreachable $1 $host does not resolve here"
    return 0
  fi
  # shellcheck disable=SC2016 # expanded by the bash child, from its arguments
  err=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$addr" "$port" 2>&1)
  case $? in
    0) ;;
    124) echo "unreachable $1 $host ($addr) port $port: no answer within 3 s" ;;
    *) echo "unreachable $1 $host ($addr) port $port: $(printf '%s\n' "$err" | sed -n '$s/.*: //p')" ;;
  esac
}

hactl_probe() {
  printf '%s\n' "$HACTL_ENDPOINTS" | while IFS= read -r endpoint; do
    [ -n "$endpoint" ] && hactl_reach_one "$endpoint"
  done
  echo "checked yes"
}

hactl_apply() {
  end=$(($(date +%s) + HACTL_TIMEOUT))
  while :; do
    out=$(hactl_probe | grep '^unreachable ') || return 0
    if [ "$(date +%s)" -ge "$end" ]; then
      printf '%s\n' "$out" | sed 's/^unreachable [^ ]* //' >&2
      return 1
    fi
    sleep 1
  done
}
