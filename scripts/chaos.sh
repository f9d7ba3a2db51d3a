#!/usr/bin/env bash
# make chaos: the reliability suite's long form on a machine with nothing running.
#   1. the fault suite, long form (cargo test -p vigil-chaos --test faults -- --ignored): the
#      whole stack as real processes on a broker and a PostgreSQL of its own, every fault twice,
#      a 30 s broker outage; the report goes to .vigil/chaos/report.txt;
#   2. poison messages, secrets in logs, limits, rate limits, the SQL and Kafka-client reviews,
#      and the detector restart case (the vigil-chaos tests `make test` runs too), on the test stack;
#   3. scripts/fuzz.sh, the fuzzing long form, unless VIGIL_CHAOS_FUZZ=0.
# Exits non-zero if any part failed, after running every part.
export VIGIL_PROFILE=test
source "$(dirname "$0")/lib.sh"

start=$(date +%s)
"$ROOT/scripts/install-deps.sh" --with-python
"$ROOT/scripts/stack.sh" up

export_test_env

cd "$ROOT"
log "Building the services and the suite."
cargo build --workspace --bins --locked
cargo build -p vigil-chaos --tests --locked

failed=()
log "Fault suite, long form (about 20 minutes)."
t=$(date +%s)
cargo test -p vigil-chaos --locked --test faults -- --ignored --nocapture || failed+=("fault suite")
log "Fault suite: $(( $(date +%s) - t )) s; report in .vigil/chaos/report.txt."

log "Poison messages, security, the detector restart case."
t=$(date +%s)
cargo test -p vigil-chaos --locked --test poison --test security --test detector_restart -- --nocapture \
  || failed+=("poison/security/restart tests")
log "Poison, security, restart: $(( $(date +%s) - t )) s."

if [ "${VIGIL_CHAOS_FUZZ:-1}" != 0 ] && [ -x "$ROOT/scripts/fuzz.sh" ]; then
  log "Fuzzing (scripts/fuzz.sh; VIGIL_CHAOS_FUZZ=0 skips it)."
  "$ROOT/scripts/fuzz.sh" || failed+=("fuzzing")
fi

if [ "${#failed[@]}" -gt 0 ]; then
  die "make chaos failed after $(( $(date +%s) - start )) s: ${failed[*]}"
fi
log "make chaos passed in $(( $(date +%s) - start )) s."
