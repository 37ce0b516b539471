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
  # QEMU guests' image: the distribution kernel, a static busybox, xz to
  # unpack the kernel (busybox-static also serves the namespace guests).
  dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
  ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
  command -v xz >/dev/null || need+=(xz-utils)
  command -v ethtool >/dev/null || need+=(ethtool)
  command -v iperf3 >/dev/null || need+=(iperf3)
  command -v ovs-vswitchd >/dev/null || need+=(openvswitch-switch)
  # The console's browser tests (Playwright drives Debian's chromium).
  command -v chromium >/dev/null || need+=(chromium)
  dpkg -s fonts-dejavu-core >/dev/null 2>&1 || need+=(fonts-dejavu-core)
  if ! command -v qemu-system-x86_64 >/dev/null; then
    # bookworm's QEMU 7.2 conflicts with the qemu-utils 10 these machines
    # carry from bookworm-backports; QEMU from bookworm-backports installs.
    if grep -q 'VERSION_CODENAME=bookworm' /etc/os-release \
       && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "== adding bookworm-backports to apt's sources (for qemu-system-x86)"
      printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
        'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
        > /etc/apt/sources.list.d/bookworm-backports.sources
      apt-get update >/dev/null
    fi
    echo "== installing QEMU for the VM tests: qemu-system-x86"
    export DEBIAN_FRONTEND=noninteractive
    if grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
    else
      apt-get install -y --no-install-recommends qemu-system-x86 >/dev/null \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends qemu-system-x86 >/dev/null; }
    fi
  fi
  if [ "${#need[@]}" -gt 0 ]; then
    echo "== installing Debian packages for the Linux-mode and browser tests: ${need[*]}"
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
