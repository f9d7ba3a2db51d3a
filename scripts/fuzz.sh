#!/usr/bin/env bash
# Fuzzing, the long form (`make fuzz`; `make chaos` calls it too):
#   api       schemathesis against the producer's and the webhook's /openapi.json: the same
#             integration tests `make test` runs with a few hundred cases and a fixed seed, here
#             with thousands and a fresh seed, on the test stack;
#   decoders  cargo-fuzz on the Avro decoders (both framings) and the webhook's payload and
#             cursor parsers, FUZZ_SECONDS per target.
# Usage: scripts/fuzz.sh [api|decoders|all]   (default: all)
# Environment:
#   FUZZ_SECONDS                 per cargo-fuzz target (default 60)
#   FUZZ_TARGETS                 space-separated subset of the targets (default: all of fuzz/Cargo.toml)
#   VIGIL_SCHEMATHESIS_EXAMPLES  examples per API operation and phase (default 400)
#   VIGIL_SCHEMATHESIS_SEED      (default: a fresh one, printed)
# Reports: .vigil/fuzz/ (schemathesis HAR and JSON reports, libFuzzer logs, summary.txt).
# A crash leaves its input in fuzz/artifacts/<target>/: turn it into a unit test of the crate at
# fault (see fuzz/README.md). Exits non-zero if any part failed, after running every part.
export VIGIL_PROFILE=test
source "$(dirname "$0")/lib.sh"

what="${1:-all}"
case "$what" in api|decoders|all) ;; *) die "usage: $0 [api|decoders|all]" ;; esac

CARGO_FUZZ_VERSION="0.13.2"
OUT="$ROOT/.vigil/fuzz"
SUMMARY="$OUT/summary.txt"
mkdir -p "$OUT"
: > "$SUMMARY"
failed=()
note() { log "$*"; echo "$*" >> "$SUMMARY"; }

# The lines the schemathesis tests print: cases, statuses, time, seed; what was acknowledged.
figures() {
  grep -Eo '(without the key: )?schemathesis: [0-9]+ cases.*|[0-9]+ (events|notifications) acknowledged.*' "$1"
}

run_api() {
  "$ROOT/scripts/install-deps.sh" --with-python
  "$ROOT/scripts/stack.sh" up
  export_test_env
  export VIGIL_SCHEMATHESIS_EXAMPLES="${VIGIL_SCHEMATHESIS_EXAMPLES:-400}"
  export VIGIL_SCHEMATHESIS_SEED="${VIGIL_SCHEMATHESIS_SEED:-$(( (RANDOM << 15) | RANDOM ))}"
  export VIGIL_SCHEMATHESIS_REPORT_DIR="$OUT/schemathesis"
  note "schemathesis: $VIGIL_SCHEMATHESIS_EXAMPLES examples per operation, seed $VIGIL_SCHEMATHESIS_SEED, reports in $VIGIL_SCHEMATHESIS_REPORT_DIR"
  cd "$ROOT"
  local spec log
  for spec in "vigil-producer --test schemathesis" "vigil-webhook --test api schemathesis::"; do
    # shellcheck disable=SC2086 # spec is "package --test name [filter]"
    set -- $spec
    log="$OUT/schemathesis-$1.log"
    log "schemathesis against $1 (log: $log)."
    if cargo test --locked -p "$1" --test "$3" ${4:-} -- --nocapture --test-threads=1 > "$log" 2>&1; then
      figures "$log" | sed "s/^/$1: /" >> "$SUMMARY" || true
      log "$1: passed."
    else
      figures "$log" | sed "s/^/$1: /" >> "$SUMMARY" || true
      note "$1: FAILED; see $log (schemathesis prints a curl command and \`st replay\` id per failure)."
      failed+=("schemathesis $1")
    fi
  done
}

ensure_cargo_fuzz() {
  local root="$CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION"
  if [ ! -x "$root/bin/cargo-fuzz" ]; then
    log "Installing cargo-fuzz $CARGO_FUZZ_VERSION into $root (once; about 2 minutes)."
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$root" \
      --target-dir "$CACHE/cargo-fuzz-build" || die "cargo install cargo-fuzz failed"
    rm -rf "$CACHE/cargo-fuzz-build"
  fi
  export PATH="$root/bin:$PATH"
  # libFuzzer itself is C++, built by the libfuzzer-sys crate.
  command -v c++ >/dev/null || "$ROOT/scripts/install-deps.sh"
}

run_decoders() {
  ensure_cargo_fuzz
  cd "$ROOT"
  local seconds="${FUZZ_SECONDS:-60}"
  local targets="${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir fuzz | tr '\n' ' ')}"
  # The stable toolchain has no sanitizers (they need -Z flags): `--sanitizer none` builds with
  # libFuzzer's coverage instrumentation only, which is all safe Rust needs to report panics,
  # hangs and runaway allocations. See fuzz/README.md.
  log "Building the fuzz targets (release, instrumented)."
  cargo fuzz build --fuzz-dir fuzz --sanitizer none > "$OUT/fuzz-build.log" 2>&1 \
    || { tail -n 30 "$OUT/fuzz-build.log" >&2; die "cargo fuzz build failed"; }
  local t log seeds execs rate
  for t in $targets; do
    mkdir -p "fuzz/corpus/$t"
    # Read-only seed directories: valid inputs, the webhook's fixtures, and every input that ever
    # crashed a target (the regression inputs the crates' unit tests decode).
    seeds=()
    local d
    for d in "fuzz/seeds/$t" */fuzz-regressions/"$t"; do
      [ -d "$d" ] && seeds+=("$d")
    done
    [ "$t" = webhook_payload ] && seeds+=("webhook/tests/fixtures")
    local dict=()
    [ -f "fuzz/dicts/$t.dict" ] && dict=("-dict=fuzz/dicts/$t.dict")
    log="$OUT/fuzz-$t.log"
    log "cargo fuzz run $t for $seconds s (log: $log)."
    if cargo fuzz run --fuzz-dir fuzz --sanitizer none "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" > "$log" 2>&1; then
      execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
      rate=$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
      note "cargo-fuzz $t: $execs executions in $seconds s ($rate/s), corpus $(find "fuzz/corpus/$t" -type f | wc -l) inputs, no crash"
    else
      note "cargo-fuzz $t: CRASHED; input in fuzz/artifacts/$t/, log $log"
      grep -E 'panicked at|ERROR: libFuzzer|Reproduce with|cargo fuzz run' "$log" | head -n 8 >&2 || true
      failed+=("cargo-fuzz $t")
    fi
  done
}

started=$(date +%s)
case "$what" in
  api) run_api ;;
  decoders) run_decoders ;;
  all) run_api; run_decoders ;;
esac
cat "$SUMMARY" >&2
if [ "${#failed[@]}" -gt 0 ]; then
  die "Fuzzing found failures in: ${failed[*]} ($(( $(date +%s) - started )) s)."
fi
log "Fuzzing found nothing in $(( $(date +%s) - started )) s; summary in $SUMMARY."
