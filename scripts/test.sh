#!/usr/bin/env bash
# Runs every test of hactl: unit tests and the end-to-end tests on a local lab of
# systemd-nspawn Debian 12 nodes. Needs root; installs what it needs with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh must run as root (the lab boots systemd-nspawn nodes): sudo scripts/test.sh" >&2
  exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"
scripts/install-deps.sh
cargo build --all-targets
# Integration test binaries run one after another; tests sharing the lab take a lock.
status=0
cargo test --all-targets || status=$?
cargo test --doc || status=$?
target/debug/hactl lab down >/dev/null 2>&1 || true
exit $status
