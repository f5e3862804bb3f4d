# shellcheck shell=sh
# Shared by the etcd_* modules. Inputs: HACTL_CACERT, HACTL_CERT, HACTL_KEY (the client's TLS
# files for https:// endpoints; empty: none); HACTL_VIA (the URLs hactl_probe_members asks).

# etcdctl against endpoint $1 with the client certificate where it is https://, then the rest.
# shellcheck disable=SC2153 # the HACTL_* inputs come from the environment
hactl_etcdctl() {
  endpoint=$1
  shift
  case $endpoint in
    https://*)
      ETCDCTL_API=3 etcdctl --endpoints="$endpoint" --dial-timeout=2s --command-timeout=5s \
        --cacert="$HACTL_CACERT" --cert="$HACTL_CERT" --key="$HACTL_KEY" "$@"
      ;;
    *) ETCDCTL_API=3 etcdctl --endpoints="$endpoint" --dial-timeout=2s --command-timeout=5s "$@" ;;
  esac
}

# Whether endpoint $1 reports itself healthy (its member and a leader): asked with curl, which
# fails at once where nothing listens (etcdctl would wait out its dial timeout, 2 s an endpoint,
# on every node of a cluster's first start).
hactl_endpoint_healthy() {
  case $1 in
    https://*) set -- "$1" --cacert "$HACTL_CACERT" --cert "$HACTL_CERT" --key "$HACTL_KEY" ;;
    *) set -- "$1" ;;
  esac
  url=$1
  shift
  curl -s --max-time 2 "$@" "$url/health" 2>/dev/null | grep -q '"health": *"true"'
}

# The first of the endpoints $1 (one a line) that is healthy and lists the members, or nothing.
hactl_answering_endpoint() {
  printf '%s\n' "$1" | while IFS= read -r e; do
    [ -n "$e" ] || continue
    hactl_endpoint_healthy "$e" || continue
    if hactl_etcdctl "$e" member list >/dev/null 2>&1; then
      echo "$e"
      exit 0
    fi
  done
}

# `members JSON` (member list -w json) through the first of HACTL_VIA (one URL a line or a
# word) that answers, or `members -` (no member answers) or `members ?` (this node cannot ask
# yet) with `reason TEXT`; hactl_members is then `listed`, `-` or `?`, and hactl_list the JSON.
# shellcheck disable=SC2034 # hactl_members and hactl_list are the callers'
hactl_probe_members() {
  hactl_members='?'
  if ! command -v etcdctl >/dev/null; then
    echo "members ?"
    echo "reason etcdctl is not installed here yet"
    return 0
  fi
  if [ -n "$HACTL_CERT" ] && [ ! -r "$HACTL_CERT" ]; then
    echo "members ?"
    echo "reason this node has no etcd client certificate yet"
    return 0
  fi
  # The first healthy URL that lists the members (one curl and one etcdctl call on a re-run).
  for e in $HACTL_VIA; do
    hactl_endpoint_healthy "$e" || continue
    if out=$(hactl_etcdctl "$e" member list -w json 2>/dev/null); then
      hactl_members=listed
      hactl_list=$out
      printf 'members %s\n' "$(printf '%s' "$out" | tr -d '\n')"
      return 0
    fi
  done
  hactl_members=-
  echo "members -"
  echo "reason no member answers"
}
