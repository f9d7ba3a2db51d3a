#!/usr/bin/env bash
# Installs what the local stack and the tests need, only when it is missing:
#   PostgreSQL (Debian packages), the nisshi broker (built once with Debian's rustc-web, cached),
#   Python test clients and schemathesis.
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

# rdkafka builds its bundled librdkafka with a C compiler and make.
for tool in cc make pkg-config; do
  command -v "$tool" >/dev/null || apt_install build-essential pkg-config
done
# ... with OpenSSL, for TLS and SASL/SCRAM to managed Kafka (rdkafka's `ssl` feature): its headers.
pkg-config --exists openssl 2>/dev/null || apt_install libssl-dev
# The Kafka TLS tests make their certificates with openssl and put stunnel (mutual TLS) in front
# of a broker.
command -v openssl >/dev/null || apt_install openssl
command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || apt_install stunnel4

# The broker: nisshi needs rustc 1.96, newer than the project's toolchain. Debian ships it as
# rustc-web/cargo-web (in /usr/bin); rustup's toolchain (first on PATH) stays the project's own,
# and only this build uses Debian's (RUSTC and the cargo binary named by path).
rust_web_ok() {
  /usr/bin/rustc --version 2>/dev/null | awk '{ split($2, v, "."); exit !(v[1] > 1 || (v[1] == 1 && v[2] >= 96)) }' \
    && [ -x /usr/bin/cargo ]
}
if [ ! -x "$NISSHI_BIN" ]; then
  if ! rust_web_ok; then
    # rustc-web conflicts with Debian's rustup package: never remove it behind the user's back.
    if dpkg -s rustup >/dev/null 2>&1; then
      die "building nisshi needs Debian's rustc-web 1.96, which conflicts with the installed rustup package; install rustc-web and cargo-web yourself (or a rustc >= 1.96 as /usr/bin/rustc) and re-run"
    fi
    apt_install rustc-web cargo-web
    if ! rust_web_ok; then
      # A stale package index installs an older rustc-web without an error: refresh, try again.
      apt-get update -q >/dev/null 2>&1 || true
      apt-get install -y -q --no-install-recommends rustc-web cargo-web >/dev/null 2>>"$CACHE/apt.err" || true
    fi
    rust_web_ok || die "/usr/bin/rustc is older than 1.96 after installing rustc-web (bookworm-security missing from the apt sources?)"
  fi
  log "Building the nisshi $NISSHI_VERSION broker once into $CACHE (about 17 minutes on 2 cores)."
  # Only the SQLite engine (libsql), at opt-level 1 without LTO and with 16 codegen units: the
  # broker waits on SQLite's fsyncs, not on its own code, and release's settings double the build.
  RUSTC=/usr/bin/rustc CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=false \
    /usr/bin/cargo install nisshi --version "$NISSHI_VERSION" --locked --no-default-features --features libsql \
    --root "$CACHE/nisshi-$NISSHI_VERSION" --target-dir "$CACHE/nisshi-build" \
    || die "cargo install nisshi failed"
  rm -rf "$CACHE/nisshi-build"
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
