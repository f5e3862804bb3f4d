# shellcheck shell=sh
# `package`. Inputs: HACTL_NAMES (bare names, one a line); HACTL_STATE (present|absent),
# HACTL_PACKAGES (names, `name=version` pins, one a line), HACTL_RECOMMENDS (yes|no),
# HACTL_NO_START (yes: no service starts during the install) (apply).

# One `pkg NAME STATUS VERSION` line a package (`un -` when dpkg does not know it); `leftover
# yes` when an interrupted install left hactl's policy-rc.d (no service would start on later
# installs) or dpkg's work half done, and no apt or dpkg runs now.
hactl_probe() {
  # Shell builtins only in the usual case (a no-op re-run pays for every process it starts).
  if hactl_ours_left || hactl_dpkg_pending; then
    pgrep -x 'apt-get|apt|dpkg' >/dev/null 2>&1 || echo "leftover yes"
  fi
  printf '%s\n' "$HACTL_NAMES" | while IFS= read -r p; do
    [ -n "$p" ] || continue
    # shellcheck disable=SC2016 # dpkg-query's format, not the shell's
    line=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev} ${Version}\n' -- "$p" 2>/dev/null | head -n1)
    echo "pkg ${line:-$p un -}"
  done
}

hactl_apt_get() {
  apt-get -q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "$@"
}

# Whether /usr/sbin/policy-rc.d is hactl's (its second line says so).
hactl_ours_left() {
  [ -f /usr/sbin/policy-rc.d ] || return 1
  { read -r _ && read -r second; } < /usr/sbin/policy-rc.d || return 1
  case "$second" in "# hactl:"*) return 0 ;; *) return 1 ;; esac
}

# Whether dpkg has work an interrupted run left (files in its updates directory).
hactl_dpkg_pending() {
  set -- /var/lib/dpkg/updates/*
  [ -e "$1" ]
}

# Removes hactl's policy-rc.d and puts back the node's own, if it had one.
hactl_policy_restore() {
  if hactl_ours_left; then
    rm -f /usr/sbin/policy-rc.d
  fi
  if [ -e /usr/sbin/policy-rc.d.hactl-saved ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    mv /usr/sbin/policy-rc.d.hactl-saved /usr/sbin/policy-rc.d
  fi
}

# Repairs what an install interrupted by a lost connection or a crash left behind.
hactl_repair() {
  hactl_policy_restore
  if hactl_dpkg_pending; then
    dpkg --configure -a || return 1
  fi
}

hactl_apply() {
  export DEBIAN_FRONTEND=noninteractive
  hactl_repair || return 1
  set -f
  old_ifs=$IFS
  IFS='
'
  if [ "$HACTL_STATE" = absent ]; then
    # shellcheck disable=SC2086 # one package a line
    set -- $HACTL_NAMES
    IFS=$old_ifs
    hactl_apt_get remove -- "$@"
    return
  fi
  # shellcheck disable=SC2086 # one package a line
  set -- $HACTL_PACKAGES
  IFS=$old_ifs
  set +f
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mmin -360 2>/dev/null | head -n1)" ]; then
    apt-get -q -o DPkg::Lock::Timeout=300 update || return 1
  fi
  if [ "$HACTL_NO_START" = yes ]; then
    if [ -e /usr/sbin/policy-rc.d ]; then
      mv /usr/sbin/policy-rc.d /usr/sbin/policy-rc.d.hactl-saved || return 1
    fi
    printf '#!/bin/sh\n# hactl: no service starts during this install\nexit 101\n' > /usr/sbin/policy-rc.d &&
      chmod 755 /usr/sbin/policy-rc.d || return 1
    trap hactl_policy_restore EXIT
    trap 'hactl_policy_restore; exit 1' HUP INT TERM
  fi
  if [ "$HACTL_RECOMMENDS" = yes ]; then
    hactl_apt_get install -- "$@" || return 1
  else
    hactl_apt_get --no-install-recommends install -- "$@" || return 1
  fi
  if [ "$HACTL_NO_START" = yes ]; then
    hactl_policy_restore
    trap - EXIT HUP INT TERM
  fi
}
