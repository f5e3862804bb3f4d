# shellcheck shell=sh
# `service`. Inputs: HACTL_UNIT; HACTL_STATE (started|stopped|restarted|reloaded|try-restarted|empty),
# HACTL_ENABLED (yes|no|empty), HACTL_NO_BLOCK (yes|no) (apply).

hactl_probe() {
  props=$(systemctl show -p LoadState -p ActiveState -p UnitFileState -p NeedDaemonReload -p DropInPaths -- "$HACTL_UNIT") || return 1
  printf '%s\n' "$props" | grep -E '^(LoadState|ActiveState|UnitFileState)=' | sed 's/=/ /'
  if hactl_stale_unit "$props"; then echo "NeedDaemonReload yes"; else echo "NeedDaemonReload no"; fi
}

# Whether systemd must read the unit again: its files changed (NeedDaemonReload), or a drop-in in
# /etc/systemd/system/UNIT.d appeared that it has not read (systemd does not notice a new one).
# $1: the unit's NeedDaemonReload and DropInPaths as `systemctl show` prints them (asked if empty).
hactl_stale_unit() {
  props=${1:-$(systemctl show -p NeedDaemonReload -p DropInPaths -- "$HACTL_UNIT")}
  case "$props" in
    *NeedDaemonReload=yes*) return 0 ;;
  esac
  case "$HACTL_UNIT" in
    *.*) unit=$HACTL_UNIT ;;
    *) unit=$HACTL_UNIT.service ;;
  esac
  read_dropins=" $(printf '%s\n' "$props" | sed -n 's/^DropInPaths=//p') "
  for dropin in /etc/systemd/system/"$unit".d/*.conf; do
    [ -e "$dropin" ] || continue
    case "$read_dropins" in
      *" $dropin "*) ;;
      *) return 0 ;;
    esac
  done
  return 1
}

# systemctl VERB on the unit, without waiting for it when asked (Type=notify units that need a quorum).
# When it fails, what the unit itself said follows systemctl's message (see hactl_unit_log).
hactl_systemctl() {
  if [ "$HACTL_NO_BLOCK" = yes ]; then
    systemctl "$1" --no-block -- "$HACTL_UNIT" || { hactl_unit_log; return 1; }
  else
    systemctl "$1" -- "$HACTL_UNIT" || { hactl_unit_log; return 1; }
  fi
}

# Why the unit failed, after systemctl's own message (which says only "the control process exited
# with error code" and points at journalctl): how its process ended (Result, ExecMainCode: 1
# exited, 2 killed; ExecMainStatus: its exit code or signal, e.g. 219 when systemd could not even
# put it in its cgroup), then its last journal lines (the process's own stderr, such as nft's
# error, and systemd's lines about the unit). journalctl --sync first (5 s at most): the
# process's last lines may still be on their way to journald. Printed whatever fails here; never
# changes the exit code.
hactl_unit_log() {
  echo "$HACTL_UNIT: $(systemctl show -p Result -p ExecMainCode -p ExecMainStatus -- "$HACTL_UNIT" 2>&1 | tr '\n' ' ')"
  timeout 5 journalctl --sync >/dev/null 2>&1
  echo "$HACTL_UNIT's last journal lines:"
  journalctl -u "$HACTL_UNIT" -n 15 --no-pager -o cat 2>&1
}

hactl_apply() {
  if hactl_stale_unit; then
    systemctl daemon-reload || return 1
  fi
  case "$HACTL_ENABLED" in
    yes) systemctl enable --quiet -- "$HACTL_UNIT" || return 1 ;;
    no) systemctl disable --quiet -- "$HACTL_UNIT" || return 1 ;;
  esac
  case "$HACTL_STATE" in
    started) systemctl is-active --quiet -- "$HACTL_UNIT" || hactl_systemctl start || return 1 ;;
    stopped) systemctl stop -- "$HACTL_UNIT" || { hactl_unit_log; return 1; } ;;
    restarted) hactl_systemctl restart || return 1 ;;
    reloaded) hactl_systemctl reload-or-restart || return 1 ;;
    try-restarted) hactl_systemctl try-restart || return 1 ;;
  esac
  return 0
}
