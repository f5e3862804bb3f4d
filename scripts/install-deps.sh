#!/usr/bin/env bash
# Installs the system tools hactl's lab and tests use (Debian/Ubuntu, as root).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "$0 must run as root (it installs packages with apt-get)" >&2
  exit 1
fi
need=()
for pair in debootstrap:debootstrap systemd-nspawn:systemd-container iptables:iptables ssh:openssh-client \
            ssh-keygen:openssh-client setpriv:util-linux ip:iproute2 shellcheck:shellcheck jq:jq curl:curl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# debootstrap of Debian 13 (`hactl lab up --release trixie`) verifies trixie's archive with
# debian-archive-keyring, whose trixie keys came to Debian 12 in 2023.3+deb12u2.
if [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] && [ ! -e /usr/share/keyrings/debian-archive-trixie-stable.gpg ]; then
  echo "updating debian-archive-keyring (Debian 13's keys)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debian-archive-keyring >/dev/null
fi
