# shellcheck shell=sh
# `decommission`. Inputs: HACTL_UNITS (one a line, in the order they stop: a systemd unit, a space,
# and the file hactl writes for it).

# Whether unit $1 is installed here and hactl's: its file $2 exists and says hactl manages it
# (a unit of the same name that hactl did not set up is never touched).
hactl_ours() {
  [ "$(systemctl show -p LoadState --value "$1" 2>/dev/null </dev/null)" = loaded ] && grep -qs 'Managed by hactl' "$2"
}

# `unit NAME ACTIVE ENABLED` for each of hactl's units installed here (ACTIVE: yes or no;
# ENABLED: yes, no, or static for a unit only others start); nothing for any other.
hactl_probe() {
  while read -r unit marker <&3; do
    [ -n "$unit" ] || continue
    hactl_ours "$unit" "$marker" </dev/null || continue
    if systemctl is-active --quiet "$unit" </dev/null; then active=yes; else active=no; fi
    case $(systemctl is-enabled "$unit" 2>/dev/null </dev/null) in
      enabled | enabled-runtime | linked | linked-runtime | alias) enabled=yes ;;
      static | indirect | generated | transient) enabled=static ;;
      *) enabled=no ;;
    esac
    echo "unit $unit $active $enabled"
  done 3<<EOF
$HACTL_UNITS
EOF
}

# Stops each unit in order (`systemctl stop` waits: a Celery worker's warm shutdown lets its
# running tasks finish, within the unit's stop timeout), then disables it, so that it does not
# start again at boot; one left failed by its stop is reset. The list comes on descriptor 3 and no command in the loop reads standard
# input: one that did (the batch's script arrives there) would end the loop early.
hactl_apply() {
  while read -r unit marker <&3; do
    [ -n "$unit" ] || continue
    hactl_ours "$unit" "$marker" </dev/null || continue
    if systemctl is-active --quiet "$unit" </dev/null; then
      systemctl stop "$unit" </dev/null || { echo "systemctl stop $unit failed" >&2; return 1; }
      echo "stopped $unit"
    fi
    # A unit killed at the end of its stop timeout is left failed: stopped on purpose, it is
    # not a failure to report (the journal keeps how it ended).
    if systemctl is-failed --quiet "$unit" </dev/null; then
      systemctl reset-failed "$unit" </dev/null
      echo "reset $unit (failed while it stopped)"
    fi
    case $(systemctl is-enabled "$unit" 2>/dev/null </dev/null) in
      enabled | enabled-runtime | linked | linked-runtime | alias)
        systemctl disable --quiet "$unit" </dev/null || { echo "systemctl disable $unit failed" >&2; return 1; }
        echo "disabled $unit"
        ;;
    esac
  done 3<<EOF
$HACTL_UNITS
EOF
}
