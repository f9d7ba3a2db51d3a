#!/usr/bin/env bash
# Installs what the local stack and the tests need, only when it is missing:
#   PostgreSQL (Debian packages), the tansu broker (cargo install, cached), Python test clients
#   and schemathesis.
# Usage: scripts/install-deps.sh [--with-python] [--with-prometheus] [--with-nextest]
source "$(dirname "$0")/lib.sh"

want_python=0; want_prom=0; want_nextest=0
for a in "$@"; do
  case "$a" in
    --with-python) want_python=1 ;;
    --with-prometheus) want_prom=1 ;;
    --with-nextest) want_nextest=1 ;;
  esac
done

apt_install() {
  [ "$(id -u)" = 0 ] || die "installing $* needs root (apt-get); install them and re-run"
  log "Installing $* with apt-get."
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>"$CACHE/apt.err"; then
    apt-get update -q >/dev/null 2>&1 || true
    apt-get install -y -q --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
  fi
}

mkdir -p "$CACHE"

if [ -z "$(pg_bindir)" ] || [ ! -x "$(pg_bindir)/initdb" ]; then
  apt_install postgresql
fi
command -v psql >/dev/null || apt_install postgresql-client
# The local stack clears a stopped broker's stored group membership with it (stack.sh).
command -v sqlite3 >/dev/null || apt_install sqlite3

# rdkafka builds its bundled librdkafka with a C compiler and make.
for tool in cc make pkg-config; do
  command -v "$tool" >/dev/null || apt_install build-essential pkg-config
done

if [ ! -x "$TANSU_BIN" ]; then
  log "Building the tansu $TANSU_VERSION broker once into $CACHE (about 13 minutes on 2 cores)."
  # opt-level 1 instead of release's 3: built in 13 min instead of 17 on 2 cores, and the tests
  # take as long with it (the broker waits on SQLite's fsyncs, not on its own code).
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql,postgres \
    --root "$CACHE/tansu-$TANSU_VERSION" --target-dir "$CACHE/tansu-build" \
    || die "cargo install tansu failed"
  rm -rf "$CACHE/tansu-build"
fi

# make test runs the tests with cargo-nextest (the development machines ship it; built once otherwise).
if [ "$want_nextest" = 1 ] && ! cargo nextest --version >/dev/null 2>&1; then
  log "Building cargo-nextest once (a few minutes)."
  cargo install cargo-nextest --locked || die "cargo install cargo-nextest failed"
fi

if [ "$want_prom" = 1 ]; then
  command -v prometheus >/dev/null || apt_install prometheus
  command -v promtool >/dev/null || apt_install prometheus
  command -v alertmanager >/dev/null || command -v prometheus-alertmanager >/dev/null || apt_install prometheus-alertmanager
fi

if [ "$want_python" = 1 ]; then
  VENV="$CACHE/venv"
  if [ ! -x "$VENV/bin/python" ]; then
    log "Creating the Python virtualenv for independent test clients in $VENV."
    python3 -m venv "$VENV" || { apt_install python3-venv; python3 -m venv "$VENV"; }
  fi
  if ! "$VENV/bin/python" -c 'import fastavro, confluent_kafka' 2>/dev/null; then
    log "Installing fastavro and confluent-kafka into $VENV."
    "$VENV/bin/pip" install -q fastavro confluent-kafka || die "pip install failed"
  fi
  # schemathesis fuzzes the HTTP APIs from their OpenAPI documents (make test, scripts/fuzz.sh).
  # Pinned: its CLI options and report formats change between versions.
  SCHEMATHESIS_VERSION="4.32.5"
  if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
    log "Installing schemathesis $SCHEMATHESIS_VERSION into $VENV."
    "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" || die "pip install schemathesis failed"
  fi
fi
log "Dependencies are in place."
