# shellcheck shell=sh
# etcd admits only TLS clients with a certificate from the cluster CA (plain HTTP, once
# converted, and a client without one are refused).
# HACTL_HOST: this node's address; HACTL_CACERT: the cluster CA; HACTL_CERT, HACTL_KEY: the
# client's certificate and key.
url="https://$HACTL_HOST:2379/health" ca=$HACTL_CACERT
curl -sf --max-time 5 --cacert "$ca" --cert "$HACTL_CERT" --key "$HACTL_KEY" "$url" | jq -e '.health == "true"' >/dev/null || { echo "not healthy over TLS with the client certificate"; exit 1; }
if curl -s -o /dev/null --max-time 5 --cacert "$ca" "$url"; then echo "a client without a certificate was answered"; exit 1; fi
[ -e /etc/hactl/etcd-tls-converting ] && exit 0
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$HACTL_HOST:2379/health")
[ "$code" != 200 ] || { echo "plain HTTP was answered"; exit 1; }
