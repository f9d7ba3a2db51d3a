#!/usr/bin/env bash
# The fault suite's short form (the one `make test` runs) ROUNDS times in a row, stopping at the
# first failure: the evidence that the local broker neither panics nor loses the books under
# kill -9, restarts, a frozen broker and rebalances.
# Usage: scripts/faults-loop.sh [ROUNDS]   (default 10; logs and reports in .vigil/faults-loop/)
# After each round it also reads the harness's broker log for a panic.
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
for ((round = 1; round <= ROUNDS; round++)); do
  t=$(date +%s)
  status=0
  cargo nextest run -p vigil-chaos --test faults --locked --no-fail-fast >"$OUT/round-$round.log" 2>&1 || status=$?
  cp .vigil/chaos/report.txt "$OUT/report-$round.txt" 2>/dev/null || true
  panics=$(cat .vigil/chaos/*/nisshi/nisshi.log 2>/dev/null | grep -c -i 'panicked' || true)
  [ "$panics" = 0 ] || die "Round $round: the broker panicked ($panics lines; logs in .vigil/chaos/*/nisshi/)."
  [ "$status" = 0 ] || die "Round $round failed after $(( $(date +%s) - t )) s (see $OUT/round-$round.log)."
  log "Round $round/$ROUNDS passed in $(( $(date +%s) - t )) s; no broker panic."
done
log "All $ROUNDS rounds of the short fault suite passed in $(( $(date +%s) - start )) s, no broker panic."
