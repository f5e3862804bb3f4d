#!/usr/bin/env bash
# Runs every test of hactl: unit tests and the end-to-end tests on a local lab of
# systemd-nspawn Debian 13 nodes (and one Debian 12 lab, tests/bookworm.rs). Needs root; installs what it needs with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh must run as root (the lab boots systemd-nspawn nodes)" >&2
  exit 1
fi
export PATH="$HOME/.cargo/bin:$PATH"
started=$(date +%s)
scripts/install-deps.sh
# Every module's remote script, every gate script, and the project's own scripts, pass shellcheck.
shellcheck -s sh src/modules/*.sh
shellcheck -s sh templates/*/gates/*.sh
shellcheck scripts/*.sh bench/*.sh .ci/run
# The code as formatted, and without a lint.
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo build --all-targets
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Integration test binaries run one after another; tests sharing the lab take a lock.
status=0
rm -rf target/tmp/measured.txt target/tmp/logs
cargo test --all-targets --no-fail-fast 2>&1 | tee "$log" || status=$?
target/debug/hactl lab down >/dev/null 2>&1 || true
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
if [ "$status" -ne 0 ]; then
  echo "why (each failing test's panic; their hactl runs in full: target/tmp/logs/):"
  grep -A4 "panicked at" "$log" | cut -c1-400 | sed 's/^/  /' || true
fi
if [ -s target/tmp/measured.txt ]; then
  echo "measured (the lab end-to-end tests' figures):"
  sed 's/^/  /' target/tmp/measured.txt
fi
echo "suite time: $(( $(date +%s) - started )) s"
exit $status
