# shellcheck shell=sh
# AMQP over TLS answers with this node's certificate, verified by name against the cluster CA.
# HACTL_ADDRESS: HOST:PORT; HACTL_CACERT: the cluster CA; HACTL_NAME: this node's name.
out=$(openssl s_client -connect "$HACTL_ADDRESS" -CAfile "$HACTL_CACERT" -verify_return_error -verify_hostname "$HACTL_NAME" </dev/null 2>&1) || { echo "$out" | tail -3; exit 1; }
echo "$out" | grep -q 'Verify return code: 0 (ok)' || { echo "$out" | grep 'Verify return code'; exit 1; }
