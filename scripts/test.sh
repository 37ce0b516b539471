#!/usr/bin/env bash
# The whole test suite: Rust unit, property and integration tests, a short
# cargo-fuzz run of every parser and pipeline, then the openstacksdk
# compatibility tests against a real server. Installs what the tests need
# (cargo-fuzz; a Python venv with openstacksdk) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build (release binary for the compatibility tests)"
cargo build --release --locked -p switchyard

echo "== cargo test"
cargo test --workspace --locked

echo "== fuzz every packet parser and pipeline briefly (cargo-fuzz, nightly)"
scripts/fuzz.sh "${SWITCHYARD_FUZZ_SECONDS:-3}"

echo "== openstacksdk compatibility"
scripts/compat.sh
