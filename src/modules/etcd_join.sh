# shellcheck shell=sh
# `etcd_join`. Inputs: HACTL_NAME (this member's name), HACTL_PEER_URLS (its peer URLs,
# comma-separated), HACTL_INITIAL_CLUSTER (the group's `name=peer-url,...`, for a bootstrap),
# HACTL_VIA (the group's client URLs, one a line: the cluster is asked through the first that
# answers), HACTL_DATA_DIR (etcd's data directory), HACTL_ENV_FILE (the bootstrap settings' file),
# HACTL_CACERT, HACTL_CERT, HACTL_KEY (for https:// URLs; empty: none), HACTL_TIMEOUT (seconds
# an apply waits for a learner's turn and for its promotion). This node has a member's data when
# its data directory has a WAL (what etcd itself checks: a failed first start leaves `member`
# without one).

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

# The first of the client URLs in HACTL_VIA that lists the members, or nothing.
hactl_answering_endpoint() {
  printf '%s\n' "$HACTL_VIA" | while IFS= read -r e; do
    [ -n "$e" ] || continue
    if hactl_etcdctl "$e" member list >/dev/null 2>&1; then
      echo "$e"
      exit 0
    fi
  done
}

# A setting of the bootstrap file ($1: CLUSTER or CLUSTER_STATE), `-` when it has none.
hactl_env_setting() {
  value=$(sed -n "s/^ETCD_INITIAL_$1=\"\\(.*\\)\"\$/\\1/p" "$HACTL_ENV_FILE" 2>/dev/null)
  echo "${value:--}"
}

# `members JSON` (member list -w json), or `members -` (no member answers) or `members ?` (this
# node cannot ask yet) with `reason TEXT`; then `data yes|no`, `env_state`, `env_cluster`. The data
# is looked at after the members: a member listed as started had its WAL before it published.
hactl_probe() {
  hactl_probe_members
  if [ -d "$HACTL_DATA_DIR/member/wal" ]; then echo "data yes"; else echo "data no"; fi
  echo "env_state $(hactl_env_setting CLUSTER_STATE)"
  echo "env_cluster $(hactl_env_setting CLUSTER)"
}

# The members line (see hactl_probe).
hactl_probe_members() {
  if ! command -v etcdctl >/dev/null; then
    echo "members ?"
    echo "reason etcdctl is not installed here yet"
    return 0
  fi
  case $HACTL_CERT in
    '') ;;
    *) if [ ! -r "$HACTL_CERT" ]; then
      echo "members ?"
      echo "reason this node has no etcd client certificate yet"
      return 0
    fi ;;
  esac
  # The first client URL that lists the members (one etcdctl call where the first answers).
  for e in $HACTL_VIA; do
    if out=$(hactl_etcdctl "$e" member list -w json 2>/dev/null); then
      printf 'members %s\n' "$(printf '%s' "$out" | tr -d '\n')"
      return 0
    fi
  done
  echo "members -"
  echo "reason no member answers"
}

# Writes the bootstrap settings ($1: the initial cluster, $2: new or existing), readable by etcd
# only at a member's first start (an existing data directory ignores them), atomically.
hactl_write_env() {
  mkdir -p "$(dirname "$HACTL_ENV_FILE")" || return 1
  tmp="$HACTL_ENV_FILE.hactl-tmp"
  {
    echo "# Managed by hactl (etcd_join): etcd's bootstrap settings, read at this member's first start only."
    printf 'ETCD_INITIAL_CLUSTER="%s"\n' "$1"
    printf 'ETCD_INITIAL_CLUSTER_STATE="%s"\n' "$2"
  } > "$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$HACTL_ENV_FILE"
}

# This member's line in the simple member listing on stdin (`ID, status, name, peer URLs,
# client URLs, is learner`; several URLs joined by commas), found by a peer URL or its name.
hactl_my_line() {
  awk -F', ' -v n="$HACTL_NAME" -v urls="$HACTL_PEER_URLS" '
    BEGIN { split(urls, want, ",") }
    { count = split($4, have, ",")
      for (j = 1; j <= count; j++) for (i in want) if (have[j] == want[i]) { print; exit } }
    $3 != "" && $3 == n { print; exit }'
}

# The initial cluster of the joining member with ID $1 from the listing on stdin: every member's
# `name=peer-url`, this member's name where its entry has none yet (as `member add` prints it;
# like etcdctl's, two other members not started yet would both be named "").
hactl_joining_cluster() {
  awk -F', ' -v n="$HACTL_NAME" -v id="$1" '
    { name = ($1 == id) ? n : $3; count = split($4, urls, ",")
      for (i = 1; i <= count; i++) out = out (out == "" ? "" : ",") name "=" urls[i] }
    END { print out }'
}

# Through endpoint $1: adds this member as a learner, waiting while another learner has the one
# learner's place; true when added (the caller lists the members again).
hactl_add_learner() {
  until out=$(hactl_etcdctl "$1" member add "$HACTL_NAME" --peer-urls="$HACTL_PEER_URLS" --learner 2>&1); do
    case $out in
      *"too many learner"*) ;;
      *) echo "etcd member add $HACTL_NAME: $out" >&2; return 1 ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "another etcd learner kept the learner's place for ${HACTL_TIMEOUT}s" >&2
      return 1
    fi
    sleep 2
  done
}

# Starts the learner with ID $2 (the members listed in $list) and promotes it through endpoint
# $1 once it has caught up with the leader (etcd refuses the promotion until then).
hactl_start_and_promote() {
  hactl_write_env "$(printf '%s\n' "$list" | hactl_joining_cluster "$2")" existing || return 1
  systemctl daemon-reload && systemctl start --no-block etcd || return 1
  until out=$(hactl_etcdctl "$1" member promote "$2" 2>&1); do
    case $out in
      *"in sync with leader"* | *"deadline exceeded"* | *"context"*) ;;
      *) # a promotion whose answer was lost: no longer a learner
        line=$(hactl_etcdctl "$1" member list | hactl_my_line)
        [ -n "$line" ] && [ "${line##*, }" = false ] && return 0
        echo "etcd member promote $HACTL_NAME: $out" >&2
        return 1
        ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "etcd learner $HACTL_NAME was not promoted within ${HACTL_TIMEOUT}s: $out" >&2
      return 1
    fi
    sleep 2
  done
}

# Whether a member of the group's cluster has published itself (its peer port's /members lists a
# member with client URLs: etcd's own test of a bootstrapped cluster), seen through any peer.
hactl_cluster_exists() {
  printf '%s\n' "$HACTL_INITIAL_CLUSTER" | tr ',' '\n' | while IFS= read -r entry; do
    url=${entry#*=}
    case $url in "$HACTL_PEER_URLS" | '') continue ;; esac
    # Either scheme: the peers may not have turned TLS on yet (a conversion in this run).
    for try in "https://${url#*://}" "http://${url#*://}"; do
      case $try in
        https://*) [ -n "$HACTL_CERT" ] || continue; set -- --cacert "$HACTL_CACERT" --cert "$HACTL_CERT" --key "$HACTL_KEY" ;;
        *) set -- ;;
      esac
      if curl -s --max-time 2 "$@" "$try/members" | jq -e 'any(.[]; (.clientURLs // []) | length > 0)' >/dev/null 2>&1; then
        echo yes
        exit 0
      fi
    done
  done
}

# Without an answering member: this member bootstraps with its group (a new cluster), unless the
# cluster exists and only has no quorum now (a new cluster then would split it: refused). With one:
# a member that published itself once but has no data here is removed first (wiped); one never
# started gets the settings of its start; one not registered is added as
# a learner; a learner is started and promoted. A member already voting with its data is left.
hactl_apply() {
  deadline=$(($(date +%s) + HACTL_TIMEOUT))
  e=$(hactl_answering_endpoint)
  if [ -z "$e" ]; then
    [ -d "$HACTL_DATA_DIR/member/wal" ] && return 0
    if [ -n "$(hactl_cluster_exists)" ]; then
      echo "the etcd cluster of this group exists but no member answers (no quorum?): $HACTL_NAME joins it when it answers again; not bootstrapping a second cluster" >&2
      return 1
    fi
    hactl_write_env "$HACTL_INITIAL_CLUSTER" new
    return
  fi
  while :; do
    list=$(hactl_etcdctl "$e" member list) || return 1
    line=$(printf '%s\n' "$list" | hactl_my_line)
    id=${line%%,*}
    if [ -z "$line" ]; then
      if [ -d "$HACTL_DATA_DIR/member/wal" ]; then
        echo "$HACTL_NAME has etcd data in $HACTL_DATA_DIR but is not a member of the cluster: remove the directory if it is a leftover" >&2
        return 1
      fi
      hactl_add_learner "$e" || return 1
    elif [ "${line##*, }" = true ]; then
      hactl_start_and_promote "$e" "$id"
      return
    elif [ -d "$HACTL_DATA_DIR/member/wal" ]; then
      return 0
    elif [ "$(printf '%s' "$line" | awk -F', ' '{print $5}')" = "" ]; then
      # Registered, never started (no client URLs published): started with the cluster's members.
      hactl_write_env "$(printf '%s\n' "$list" | hactl_joining_cluster "$id")" existing
      return
    else
      hactl_etcdctl "$e" member remove "$id" >/dev/null || return 1 # its data is gone: added again
    fi
  done
}
