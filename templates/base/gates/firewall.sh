# shellcheck shell=sh
# The host firewall holds the rules hactl loaded (policy drop).
nft -s -n list table inet hactl | cmp -s - /run/hactl-firewall.rules || { echo "the loaded rules are not /etc/hactl/firewall.nft's"; exit 1; }
nft list chain inet hactl input | grep -q 'policy drop;' || { echo "the input chain does not drop by default"; exit 1; }
/usr/local/sbin/hactl-firewall-after check || { echo "the stack's units do not all require hactl-firewall.service (drop-ins hactl-firewall.conf)"; exit 1; }
