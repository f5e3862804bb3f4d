# shellcheck shell=sh
# `decommission`. Inputs: HACTL_UNITS (one a line, in the order they stop: a systemd unit, a space,
# and the file hactl writes for it). The loops read that list on descriptor 3: on their standard
# input, a command in the loop that reads its own (systemctl may) would take the rest of the list.

# Whether unit $1 is installed here and hactl's: its file $2 exists and says hactl manages it
# (a unit of the same name that hactl did not set up is never touched).
hactl_ours() {
  [ "$(systemctl show -p LoadState --value "$1" 2>/dev/null)" = loaded ] && grep -qs 'Managed by hactl' "$2"
}

# `unit NAME ACTIVE ENABLED` for each of hactl's units installed here (ACTIVE: yes or no;
# ENABLED: yes, no, or static for a unit only others start); nothing for any other.
hactl_probe() {
  while read -r unit marker <&3; do
    [ -n "$unit" ] || continue
    hactl_ours "$unit" "$marker" || continue
    if systemctl is-active --quiet "$unit"; then active=yes; else active=no; fi
    case $(systemctl is-enabled "$unit" 2>/dev/null) in
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
# start again at boot; one left failed by its stop is reset.
hactl_apply() {
  while read -r unit marker <&3; do
    [ -n "$unit" ] || continue
    hactl_ours "$unit" "$marker" || continue
    if systemctl is-active --quiet "$unit"; then
      systemctl stop "$unit" || { echo "systemctl stop $unit failed" >&2; return 1; }
      echo "stopped $unit"
    fi
    # A unit killed at the end of its stop timeout is left failed: stopped on purpose, it is
    # not a failure to report (the journal keeps how it ended).
    if systemctl is-failed --quiet "$unit"; then
      systemctl reset-failed "$unit"
      echo "reset $unit (failed while it stopped)"
    fi
    case $(systemctl is-enabled "$unit" 2>/dev/null) in
      enabled | enabled-runtime | linked | linked-runtime | alias)
        systemctl disable --quiet "$unit" || { echo "systemctl disable $unit failed" >&2; return 1; }
        echo "disabled $unit"
        ;;
    esac
  done 3<<EOF
$HACTL_UNITS
EOF
}
