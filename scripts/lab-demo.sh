#!/usr/bin/env bash
# hactl's main job on a local lab, in one command: boot three Debian 13 (trixie) nodes (RELEASE=bookworm for Debian 12), show the plan,
# provision the whole stack (etcd, Patroni PostgreSQL, RabbitMQ, Airflow, the web LB, the guard), prove a
# re-run changes nothing, and print where the Airflow UI answers. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/lab-demo.sh must run as root (the lab boots systemd-nspawn nodes)" >&2
  exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
cargo build --release
hactl=target/release/hactl
playbook=${PLAYBOOK:-playbooks/site.yml}
inventory=/var/lib/hactl/lab/inventory.yml
$hactl lab up --nodes "${NODES:-3}" --release "${RELEASE:-trixie}"
$hactl plan "$inventory" -p "$playbook" || [ $? -eq 2 ]
SECONDS=0
$hactl provision "$inventory" -p "$playbook" --stats
echo "provision: ${SECONDS} s"
SECONDS=0
$hactl provision "$inventory" -p "$playbook" --stats
echo "re-run: ${SECONDS} s"
lb=$(awk '/ansible_host:/ { sub(/.*ansible_host: */, ""); sub(/[},].*/, ""); gsub(/"/, ""); print; exit }' "$inventory")
# The web LB's VIP (keepalived moves it to another LB host when this one fails).
vip=$(awk '/web_lb_vip:/ { sub(/.*web_lb_vip: */, ""); gsub(/"/, ""); print; exit }' "$inventory")
lab_ssh=(ssh -i /var/lib/hactl/lab/ssh/id_ed25519 -o UserKnownHostsFile=/var/lib/hactl/lab/ssh/known_hosts)
guard=$("${lab_ssh[@]}" "root@$lb" hactl-guard status)
cat <<EOF

The Airflow UI, through the web LB: https://${vip:-$lb}:8080/ (the VIP; every node of the lab answers on 8080 too)
Its certificate, from the lab's CA: trust ${inventory%.yml}.pki/ca.crt (curl --cacert ${inventory%.yml}.pki/ca.crt https://${vip:-$lb}:8080/)
Log in as:                          admin
Its password:                       airflow_admin_password in ${inventory%.yml}.secrets.yml
The guard (hactl-guard status):     $guard
EOF
