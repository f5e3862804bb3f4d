# shellcheck shell=sh
# Exactly one LB host holds the VIP (the holder hears no other; the others hear one).
# HACTL_VIP, HACTL_DEV: the VIP and its interface.
vip=$HACTL_VIP dev=$HACTL_DEV
if ip -o -4 addr show dev "$dev" | grep -qF " $vip/"; then
  # One probe, a second's wait for a second holder (each other LB host also counts who answers).
  arping -q -D -c 1 -w 1 -I "$dev" "$vip" || { echo "another host answers for the VIP $vip too"; exit 1; }
  echo "this host holds the VIP $vip"
else
  n=$(arping -c 2 -w 1 -I "$dev" "$vip" | grep -o 'from [^ ]* \[[^]]*\]' | sort -u | wc -l)
  [ "$n" = 1 ] || { echo "$n hosts answer for the VIP $vip"; exit 1; }
  echo "another host holds the VIP $vip"
fi
