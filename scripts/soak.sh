#!/usr/bin/env bash
# make soak: a steady rate through the whole stack (a broker and a PostgreSQL of its own, the
# four services as processes) while each service's resident memory and open descriptors are
# sampled; fails if either grows without bound, a service restarts, or the books do not balance.
#   SOAK_DURATION  how long (default 10m)      SOAK_RATE      events per second (default 100)
#   SOAK_INTERVAL  between samples (default 5s)
# Report: .vigil/soak/report.txt; samples: .vigil/soak/samples.csv.
export VIGIL_PROFILE=test
source "$(dirname "$0")/lib.sh"

"$ROOT/scripts/install-deps.sh"
export VIGIL_TEST_BROKER_BIN="$NISSHI_BIN"
export RUST_BACKTRACE=1
cd "$ROOT"
log "Building the services and vigil-soak."
cargo build --workspace --bins --locked
log "Soaking for ${SOAK_DURATION:-10m} at ${SOAK_RATE:-100} events/s."
exec "$ROOT/target/debug/vigil-soak"
