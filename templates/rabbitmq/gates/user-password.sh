# shellcheck shell=sh
# The airflow user's password is the inventory's (its stored salted SHA-256).
# HACTL_USER, HACTL_PASSWORD: the user and its password.
# The password stays in this shell (printf is a builtin: no process shows it).
user=$(curl -sf --max-time 5 -K /etc/hactl/rabbitmq-api.curl "http://127.0.0.1:15672/api/users/$(printf '%s' "$HACTL_USER" | jq -sRr @uri)") || { echo "no user $HACTL_USER (or no answer)"; exit 1; }
[ "$(printf '%s' "$user" | jq -r .hashing_algorithm)" = rabbit_password_hashing_sha256 ] || { echo "not a salted SHA-256 hash"; exit 1; }
stored=$(printf '%s' "$user" | jq -r .password_hash)
want=$(printf '%s' "$stored" | base64 -d | tail -c +5 | od -An -tx1 | tr -d ' \n')
got=$({ printf '%s' "$stored" | base64 -d | head -c 4; printf '%s' "$HACTL_PASSWORD"; } | sha256sum | cut -d' ' -f1)
{ [ -n "$want" ] && [ "$want" = "$got" ]; } || { echo "the password differs"; exit 1; }
