# shellcheck shell=sh
# What the `patroni_*` modules share. Inputs: HACTL_APIS (REST API URLs, one a line: of one
# member in both schemes, or of several members; the first that answers is asked, so that an API
# turning from plain HTTP to TLS is found either way; the first URL's scheme is the one
# patroni_restapi_tls asks for), HACTL_API_USER and HACTL_API_PASSWORD (for the unsafe endpoints;
# empty where they need none: the credentials go only to URLs of the first URL's scheme, never
# to plain HTTP after TLS), HACTL_CACERT (the CA https:// APIs are verified against; empty: the
# system's store).

# curl, verifying https:// APIs against HACTL_CACERT where it is set.
hactl_curl() {
  if [ -n "${HACTL_CACERT:-}" ]; then
    curl --cacert "$HACTL_CACERT" "$@"
  else
    curl "$@"
  fi
}

# Prints the first of HACTL_APIS that starts with $1 (empty: any) whose Patroni answers (GET
# /patroni, always 200 from a running Patroni); fails where none does.
hactl_api() {
  printf '%s\n' "$HACTL_APIS" | {
    while IFS= read -r url; do
      case $url in "${1:-}"?*) ;; *) continue ;; esac
      hactl_curl -sf -o /dev/null --max-time 3 "$url/patroni" && printf '%s\n' "$url" && exit 0
    done
    exit 1
  }
}

# The scheme the REST API is configured with, `http://` or `https://`: the first URL's.
hactl_scheme() {
  printf '%s\n' "$HACTL_APIS" | sed -n '/./{s|://.*|://|p;q;}'
}

# GET $1 from the first of HACTL_APIS that answers it (one request to the one that does).
hactl_get() {
  printf '%s\n' "$HACTL_APIS" | {
    while IFS= read -r url; do
      [ -n "$url" ] && hactl_curl -sf --max-time 5 "$url/$1" && exit 0
    done
    exit 1
  }
}

# The HTTP status of GET $1 from the first API that answers (000: none answers).
hactl_status() {
  hactl_url=$(hactl_api) || { echo 000; return; }
  hactl_curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$hactl_url/$1"
}

# Sends $3 with method $1 to the unsafe endpoint $2 of the first API that answers, with the
# credentials through curl's standard input (a config line, its quotes and backslashes escaped),
# never on its command line, and only to an API of the configured scheme (no plain HTTP when
# TLS is on, whatever answers there).
hactl_unsafe() {
  if [ -n "$HACTL_API_USER" ] && hactl_url=$(hactl_api "$(hactl_scheme)"); then
    printf 'user = "%s"\n' "$(printf '%s:%s' "$HACTL_API_USER" "$HACTL_API_PASSWORD" | sed 's/[\\"]/\\&/g')" |
      hactl_curl -sf -K - -X"$1" "$hactl_url/$2" -d "$3"
    return
  fi
  # No API of the configured scheme answers (one turning TLS on in this run), or none needs
  # credentials: another scheme's is asked without them. It answers only where it needs none (a
  # relaxed cluster being locked down), and a password never crosses plain HTTP.
  hactl_url=$(hactl_api) || return 1
  hactl_curl -sf -X"$1" "$hactl_url/$2" -d "$3"
}

# Waits up to $1 seconds until the member's state (GET /patroni) satisfies the jq test $2.
hactl_wait_member() {
  i=0
  until hactl_get patroni | jq -en "input | $2" >/dev/null 2>&1; do
    i=$((i + 1))
    [ "$i" -lt "$1" ] || return 1
    sleep 1
  done
}
