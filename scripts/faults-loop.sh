#!/usr/bin/env bash
# The fault suite's short form (the one `make test` runs) ROUNDS times in a row, stopping at the
# first failure: the evidence that the local broker neither panics nor loses the books under
# kill -9, restarts, a frozen broker and rebalances.
# Usage: scripts/faults-loop.sh [ROUNDS]   (default 10; logs and reports in .vigil/faults-loop/)
# After each round it also reads the harness's broker log for a panic. VIGIL_KEEP_GOING=1 runs
# every round whatever happens and counts the failures and the panics instead.
export VIGIL_PROFILE=test
source "$(dirname "$0")/lib.sh"

ROUNDS="${1:-10}"
OUT="$ROOT/.vigil/faults-loop"
mkdir -p "$OUT"

"$ROOT/scripts/install-deps.sh" --with-python --with-nextest
"$ROOT/scripts/stack.sh" up
export_test_env
cd "$ROOT"
cargo build --workspace --bins --locked
cargo build -p vigil-chaos --tests --locked

start=$(date +%s)
failures=0; panicked=0
keep_going() { [ "${VIGIL_KEEP_GOING:-0}" = 1 ]; }
for ((round = 1; round <= ROUNDS; round++)); do
  t=$(date +%s)
  status=0
  cargo nextest run -p vigil-chaos --test faults --locked --no-fail-fast >"$OUT/round-$round.log" 2>&1 || status=$?
  cp .vigil/chaos/report.txt "$OUT/report-$round.txt" 2>/dev/null || true
  panics=$(cat .vigil/chaos/*/nisshi/nisshi.log 2>/dev/null | grep -c -i 'panicked' || true)
  if [ "$panics" != 0 ]; then
    panicked=$((panicked + 1)); cp -r .vigil/chaos/faults-short "$OUT/broker-panic-$round" 2>/dev/null || true
    keep_going || die "Round $round: the broker panicked ($panics lines; logs in $OUT/broker-panic-$round)."
    log "Round $round/$ROUNDS: the broker panicked ($panics lines; logs in $OUT/broker-panic-$round)."
  fi
  if [ "$status" != 0 ]; then
    failures=$((failures + 1)); cp -r .vigil/chaos/faults-short "$OUT/failed-$round" 2>/dev/null || true
    keep_going || die "Round $round failed after $(( $(date +%s) - t )) s (see $OUT/round-$round.log)."
    log "Round $round/$ROUNDS failed after $(( $(date +%s) - t )) s (report $OUT/report-$round.txt)."
  else
    log "Round $round/$ROUNDS passed in $(( $(date +%s) - t )) s; no broker panic."
  fi
done
[ "$failures" = 0 ] && [ "$panicked" = 0 ] \
  || die "$failures of $ROUNDS rounds failed, $panicked with a broker panic ($(( $(date +%s) - start )) s)."
log "All $ROUNDS rounds of the short fault suite passed in $(( $(date +%s) - start )) s, no broker panic."
