#!/bin/sh
# A stand-in for systemctl in the guard's tests (hactl_guard.SYSTEMCTL points here): sh, so it
# starts about as fast as systemctl. State lives in $HACTL_FAKE_SYSTEMD: UNIT.state holds
# active, deactivating or inactive; a stop takes the seconds in the file stop_delay. With a file
# `hang` there, every call hangs (a systemd that does not answer).
dir=$HACTL_FAKE_SYSTEMD
[ -e "$dir/hang" ] && exec sleep 3600
[ "$1" = is-system-running ] && { echo running; exit 0; }
for unit; do :; done
state=$dir/$unit.state
put() { echo "$1" >"$state.$$" && mv "$state.$$" "$state"; }
current=$(cat "$state" 2>/dev/null || echo inactive)
case $1 in
show) if [ "$3" = ActiveState ]; then echo "$current"; else echo loaded; fi ;;
start) put active ;;
stop)
	[ "$current" = active ] || exit 0
	put deactivating
	(
		sleep "$(cat "$dir/stop_delay")"
		[ "$(cat "$state")" = deactivating ] && put inactive
	) </dev/null >/dev/null 2>&1 &
	;;
kill) put inactive ;;
esac
