# shellcheck shell=sh
# `etcd_join`. Inputs: HACTL_NAME (this member's name), HACTL_PEER_URLS (its peer URLs,
# comma-separated), HACTL_INITIAL_CLUSTER (the group's `name=peer-url,...`, for a bootstrap),
# HACTL_VIA (the group's client URLs, one a line: the cluster is asked through the first that
# answers), HACTL_DATA_DIR (etcd's data directory), HACTL_ENV_FILE (the bootstrap settings' file),
# HACTL_CACERT, HACTL_CERT, HACTL_KEY (for https:// URLs; empty: none), HACTL_TIMEOUT (seconds
# an apply waits for the cluster to answer, for a learner's turn and for its promotion). This
# node has a member's data when its data directory has a WAL (what etcd itself checks: a failed
# first start leaves `member` without one). etcd.sh's helpers come first.

# A setting of the bootstrap file ($1: CLUSTER or CLUSTER_STATE), `-` when it has none.
hactl_env_setting() {
  value=$(sed -n "s/^ETCD_INITIAL_$1=\"\\(.*\\)\"\$/\\1/p" "$HACTL_ENV_FILE" 2>/dev/null)
  echo "${value:--}"
}

# `members JSON` (member list -w json), or `members -` (no member answers) or `members ?` (this
# node cannot ask yet) with `reason TEXT`; then `data yes|no`, `env_state`, `env_cluster`, and
# where no member answered and there is no data here, `published yes|no|unknown`. The data is
# looked at after the members: a member listed as started had its WAL before it published.
# shellcheck disable=SC2154 # hactl_members is set by hactl_probe_members (etcd.sh)
hactl_probe() {
  hactl_probe_members
  if [ -d "$HACTL_DATA_DIR/member/wal" ]; then echo "data yes"; else echo "data no"; fi
  echo "env_state $(hactl_env_setting CLUSTER_STATE)"
  echo "env_cluster $(hactl_env_setting CLUSTER)"
  if [ "$hactl_members" = - ] && [ ! -d "$HACTL_DATA_DIR/member/wal" ]; then
    echo "published $(hactl_cluster_published)"
  fi
}

# Whether a member of the group's cluster has published itself (its peer port's /members lists
# a member with client URLs: etcd's own test of a bootstrapped cluster), asked of each other
# peer in either scheme (the peers may not have turned TLS on yet): `yes`; `no` when every
# other peer answered without one or refused the connection (not running); `unknown` when one
# could not be asked (no answer in time, a TLS error): the cluster may exist.
# shellcheck disable=SC2153 # the HACTL_* inputs come from the environment
hactl_cluster_published() {
  hactl_verdict=no
  for entry in $(printf '%s' "$HACTL_INITIAL_CLUSTER" | tr ',' ' '); do
    url=${entry#*=}
    case $url in "$HACTL_PEER_URLS" | '') continue ;; esac
    peer=unknown
    for try in "https://${url#*://}" "http://${url#*://}"; do
      case $try in
        https://*) [ -n "$HACTL_CERT" ] || continue; set -- --cacert "$HACTL_CACERT" --cert "$HACTL_CERT" --key "$HACTL_KEY" ;;
        *) set -- ;;
      esac
      members=$(curl -s --max-time 2 "$@" "$try/members")
      case $? in
        0)
          published=$(printf '%s' "$members" |
            jq -r 'if type == "array" and any(.[]; (.clientURLs // []) | length > 0) then "yes" else "no" end' 2>/dev/null)
          if [ "$published" = yes ]; then
            echo yes
            return 0
          fi
          peer=no
          break
          ;;
        7) peer=no ;; # refused: nothing listens there
      esac
    done
    [ "$peer" = no ] || hactl_verdict=unknown
  done
  echo "$hactl_verdict"
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

# Fails, saying so, once the apply's deadline has passed ($1: what it waited for).
hactl_in_time() {
  [ "$(date +%s)" -lt "$hactl_deadline" ] && return 0
  echo "etcd member $HACTL_NAME: $1 for ${HACTL_TIMEOUT}s" >&2
  return 1
}

# Through endpoint $1: adds this member as a learner, waiting while another learner has the one
# learner's place (the caller lists the members again).
hactl_add_learner() {
  until out=$(hactl_etcdctl "$1" member add "$HACTL_NAME" --peer-urls="$HACTL_PEER_URLS" --learner 2>&1); do
    case $out in
      *"too many learner"*) why="another learner kept the learner's place" ;;
      # etcd adds no member while one is down (strict reconfiguration check): a member being
      # removed in this run (provision --prune) is waited for.
      *"unhealthy cluster"*) why="etcd refused a new member while one of its members is down (remove a member that is gone for good with provision --prune)" ;;
      *) echo "etcd member add $HACTL_NAME: $out" >&2; return 1 ;;
    esac
    hactl_in_time "$why" || return 1
    sleep 2
  done
}

# Starts the learner with ID $2 (the members listed in $3) and promotes it through endpoint $1
# once it has caught up with the leader (etcd refuses the promotion until then). A promotion
# whose answer was lost is found by listing the members again.
hactl_start_and_promote() {
  hactl_write_env "$(printf '%s\n' "$3" | hactl_joining_cluster "$2")" existing || return 1
  systemctl daemon-reload && systemctl start --no-block etcd || return 1
  until out=$(hactl_etcdctl "$1" member promote "$2" 2>&1); do
    case $out in
      *"in sync with leader"* | *"deadline exceeded"* | *"context"*) ;;
      *)
        line=$(hactl_etcdctl "$1" member list | hactl_my_line)
        [ -n "$line" ] && [ "${line##*, }" = false ] && return 0
        echo "etcd member promote $HACTL_NAME: $out" >&2
        return 1
        ;;
    esac
    hactl_in_time "the learner was not promoted (last: $out)" || return 1
    sleep 2
  done
}

# With no member answering and no cluster published anywhere: this member bootstraps with its
# group (a new cluster). A cluster that may exist but does not answer is waited for (a
# bootstrap then would split it), and refused at the deadline. With an answer: a member that
# published itself once but has no data here is removed first (wiped); one never started gets
# the settings of its start; one not registered is added as a learner; a learner is started and
# promoted. A member already voting with its data is left.
hactl_apply() {
  hactl_deadline=$(($(date +%s) + HACTL_TIMEOUT))
  until e=$(hactl_answering_endpoint "$HACTL_VIA") && [ -n "$e" ]; do
    [ -d "$HACTL_DATA_DIR/member/wal" ] && return 0
    if [ "$(hactl_cluster_published)" = no ]; then
      hactl_write_env "$HACTL_INITIAL_CLUSTER" new
      return
    fi
    hactl_in_time "the group's etcd cluster may exist but no member answered (no quorum?); not bootstrapping a second one" || return 1
    sleep 2
  done
  while hactl_in_time "the membership did not settle"; do
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
      hactl_start_and_promote "$e" "$id" "$list"
      return
    elif [ -d "$HACTL_DATA_DIR/member/wal" ]; then
      # A member with its data: settings that name a host gone from the group become the group's.
      if [ -f "$HACTL_ENV_FILE" ] && [ "$(hactl_env_setting CLUSTER)" != "$HACTL_INITIAL_CLUSTER" ]; then
        hactl_write_env "$HACTL_INITIAL_CLUSTER" existing
      fi
      return 0
    elif [ "$(printf '%s' "$line" | awk -F', ' '{print $5}')" = "" ]; then
      # Registered, never started (no client URLs published): started with the cluster's members.
      hactl_write_env "$(printf '%s\n' "$list" | hactl_joining_cluster "$id")" existing
      return
    else
      hactl_etcdctl "$e" member remove "$id" >/dev/null || return 1 # its data is gone: added again
    fi
  done
  return 1
}
