#!/usr/bin/env bash
# make test: installs what is missing, starts the test stack on its own ports (never the one
# `make run` uses), and runs every test of the workspace against it.
# Extra arguments go to `cargo nextest run`; the doctests get the package selection (e.g.
# scripts/test.sh -p vigil-producer).
export VIGIL_PROFILE=test
source "$(dirname "$0")/lib.sh"

start=$(date +%s)
"$ROOT/scripts/install-deps.sh" --with-python --with-prometheus --with-nextest
"$ROOT/scripts/stack.sh" up

export_test_env

cd "$ROOT"
# Each test makes its own database; drop those earlier runs left behind.
for db in $(psql "$PG_ADMIN_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'vigil\_test\_%'"); do
  psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
done
log "Building the workspace and its tests."
cargo build --workspace --all-targets --locked
log "Running the tests (cargo-nextest, settings in .config/nextest.toml)."
# `-p NAME` selects packages; otherwise the whole workspace (`--exclude NAME` works with it).
# The doctests get only the package selection: nextest's own options (`-E`, filters) mean
# nothing to `cargo test --doc`.
scope=(--workspace)
packages=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    -p|--package) scope=(); packages+=("${args[i]}" "${args[i+1]:-}"); i=$((i + 1)) ;;
    -p*|--package=*) scope=(); packages+=("${args[i]}") ;;
  esac
done
threads=()
[ -n "${VIGIL_TEST_THREADS:-}" ] && threads=(--test-threads="$VIGIL_TEST_THREADS")
status=0
cargo nextest run "${scope[@]}" --locked --no-fail-fast "${threads[@]}" "$@" || status=$?
# nextest does not run doctests.
cargo test "${scope[@]}" "${packages[@]}" --locked --doc || status=$?
[ "$status" = 0 ] || die "Some tests failed (see above)."
log "All tests passed in $(( $(date +%s) - start )) s."
