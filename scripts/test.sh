#!/usr/bin/env bash
# The whole test suite: Rust unit, property and integration tests, a short
# cargo-fuzz run of every parser and pipeline, then the openstacksdk
# compatibility tests against a real server. Installs what the tests need
# (cargo-fuzz; a Python venv with openstacksdk) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
# A one-off build gains nothing from incremental state but pays its disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Linux-mode tests (network namespaces, TAP devices, real pings) need root and
# a few Debian packages; install what is missing. Without root they skip
# themselves, loudly.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  command -v ip >/dev/null || need+=(iproute2)
  command -v ping >/dev/null || need+=(iputils-ping)
  command -v tcpdump >/dev/null || need+=(tcpdump)
  command -v busybox >/dev/null || need+=(busybox)
  command -v ethtool >/dev/null || need+=(ethtool)
  command -v iperf3 >/dev/null || need+=(iperf3)
  command -v ovs-vswitchd >/dev/null || need+=(openvswitch-switch)
  if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing Debian packages for the Linux-mode tests: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${need[@]}" >/dev/null \
      || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${need[@]}" >/dev/null; }
  fi
fi

echo "== cargo build (release binary for the compatibility tests)"
cargo build --release --locked -p switchyard

echo "== cargo test"
cargo test --workspace --locked

echo "== fuzz every packet parser and pipeline briefly (cargo-fuzz, nightly)"
scripts/fuzz.sh "${SWITCHYARD_FUZZ_SECONDS:-3}"

echo "== openstacksdk compatibility"
scripts/compat.sh
