#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for N seconds each (default 5).
# Installs cargo-fuzz if missing; needs the nightly toolchain (rustup).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-5}"
shift || true

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: the nightly toolchain is required (rustup toolchain install nightly)" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

cd fuzz
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "== building ${#targets[@]} fuzz targets"
cargo +nightly fuzz build -O

failed=()
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${secs}s"
    mkdir -p "corpus/$t"
    if ! cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 2>"target/fuzz-$t.log"; then
        failed+=("$t")
        tail -40 "target/fuzz-$t.log" >&2
    else
        grep -E "stat::number_of_executed_units|Done" "target/fuzz-$t.log" | tail -2 || true
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: crashes in: ${failed[*]} (artifacts under fuzz/artifacts/)" >&2
    exit 1
fi
echo "== all fuzz targets ran ${secs}s without a crash"
