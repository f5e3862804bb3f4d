# shellcheck shell=sh
# A TLS listener (AMQP, the management API, or one through the LB) answers with a certificate
# verified by name against the cluster CA.
# HACTL_ADDRESS: HOST:PORT; HACTL_CACERT: the cluster CA; HACTL_NAME: the name to check.
out=$(openssl s_client -connect "$HACTL_ADDRESS" -CAfile "$HACTL_CACERT" -verify_return_error -verify_hostname "$HACTL_NAME" </dev/null 2>&1) || { echo "$out" | tail -3; exit 1; }
echo "$out" | grep -q 'Verify return code: 0 (ok)' || { echo "$out" | grep 'Verify return code'; exit 1; }
