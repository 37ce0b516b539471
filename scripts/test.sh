#!/usr/bin/env bash
# The whole test suite: Rust unit, property and integration tests, then the
# openstacksdk compatibility tests against a real server. Installs what the
# tests need (a Python venv with openstacksdk) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo build (release binary for the compatibility tests)"
cargo build --release --locked -p switchyard

echo "== cargo test"
cargo test --workspace --locked

echo "== openstacksdk compatibility"
scripts/compat.sh
