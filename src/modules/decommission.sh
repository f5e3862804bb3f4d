# shellcheck shell=sh
# `decommission`. Inputs: HACTL_UNITS (one a line, in the order they stop: a systemd unit, a space,
# and the file hactl writes for it).

# Whether unit $1 is installed here and hactl's: its file $2 exists and says hactl manages it
# (a unit of the same name that hactl did not set up is never touched).
hactl_ours() {
  [ "$(systemctl show -p LoadState --value "$1" 2>/dev/null)" = loaded ] && grep -qs 'Managed by hactl' "$2"
}

# `unit NAME ACTIVE ENABLED` for each of hactl's units installed here (ACTIVE: yes or no;
# ENABLED: yes, no, or static for a unit only others start); nothing for any other.
hactl_probe() {
  printf '%s\n' "$HACTL_UNITS" | while read -r unit marker; do
    [ -n "$unit" ] || continue
    hactl_ours "$unit" "$marker" || continue
    if systemctl is-active --quiet "$unit"; then active=yes; else active=no; fi
    case $(systemctl is-enabled "$unit" 2>/dev/null) in
      enabled | enabled-runtime | linked | linked-runtime | alias) enabled=yes ;;
      static | indirect | generated | transient) enabled=static ;;
      *) enabled=no ;;
    esac
    echo "unit $unit $active $enabled"
  done
}

# Stops each unit in order (`systemctl stop` waits: a Celery worker's warm shutdown lets its
# running tasks finish, within the unit's stop timeout), then disables it, so that it does not
# start again at boot.
hactl_apply() {
  printf '%s\n' "$HACTL_UNITS" | while read -r unit marker; do
    [ -n "$unit" ] || continue
    hactl_ours "$unit" "$marker" || continue
    if systemctl is-active --quiet "$unit"; then
      systemctl stop "$unit" || { echo "systemctl stop $unit failed" >&2; exit 1; }
      echo "stopped $unit"
    fi
    case $(systemctl is-enabled "$unit" 2>/dev/null) in
      enabled | enabled-runtime | linked | linked-runtime | alias)
        systemctl disable --quiet "$unit" || { echo "systemctl disable $unit failed" >&2; exit 1; }
        echo "disabled $unit"
        ;;
    esac
  done
}
