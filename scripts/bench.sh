#!/usr/bin/env bash
# make bench: the benchmarks, release build, against the test stack. Figures, not assertions:
# printed and appended to bench/results/<name>.txt. Extra arguments go to vigil-bench
# (default: all).
export VIGIL_PROFILE=test
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/install-deps.sh"
"$ROOT/scripts/stack.sh" up
export VIGIL_TEST_PG_ADMIN_URL="$PG_ADMIN_URL" VIGIL_TEST_KAFKA_BROKERS="$KAFKA_BROKERS" RUST_LOG="${RUST_LOG:-warn}"
cd "$ROOT"
cargo run --release --locked -p vigil-bench -- "${@:-all}"
