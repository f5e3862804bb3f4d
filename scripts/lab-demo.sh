#!/usr/bin/env bash
# hactl's main job on a local lab, in one command: boot three Debian 12 nodes, show the plan,
# provision, and prove a re-run changes nothing. Needs root.
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
$hactl lab up --nodes "${NODES:-3}"
$hactl plan "$inventory" -p "$playbook" || [ $? -eq 2 ]
$hactl provision "$inventory" -p "$playbook" --stats
$hactl provision "$inventory" -p "$playbook" --stats
