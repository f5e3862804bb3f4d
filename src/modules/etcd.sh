# shellcheck shell=sh
# Shared by the etcd_* modules. Inputs: HACTL_CACERT, HACTL_CERT, HACTL_KEY (the client's TLS
# files for https:// endpoints; empty: none).

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
