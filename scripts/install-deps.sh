#!/usr/bin/env bash
# Installs what the local stack and the tests need, only when it is missing:
#   PostgreSQL (Debian packages), the nisshi broker (built once with Debian's rustc-web, cached),
#   Python test clients and schemathesis.
# Usage: scripts/install-deps.sh [--with-python] [--with-prometheus] [--with-nextest]
#
# Not root: Debian packages are installed with `sudo apt-get` (said in the log; sudo may ask for
# the password), everything else (cargo, pip into the project's virtualenv) runs as the user.
# What this cannot install itself (a Rust toolchain new enough for the workspace, curl, sudo
# when not root and something is missing) is checked first and named.
source "$(dirname "$0")/lib.sh"

# Pinned versions of what this installs (nisshi's is in lib.sh).
NEXTEST_VERSION="0.9.143"
FASTAVRO_VERSION="1.13.1"
CONFLUENT_KAFKA_VERSION="2.16.1"
SCHEMATHESIS_VERSION="4.32.5"

want_python=0; want_prom=0; want_nextest=0
for a in "$@"; do
  case "$a" in
    --with-python) want_python=1 ;;
    --with-prometheus) want_prom=1 ;;
    --with-nextest) want_nextest=1 ;;
  esac
done

# apt-get as root: itself when root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  else
    sudo DEBIAN_FRONTEND=noninteractive "$@"
  fi
}

apt_install() {
  if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; then
    die "installing $* needs root and sudo is not installed: install them as root (apt-get install $*), or run this as root"
  fi
  if [ "$(id -u)" = 0 ]; then
    log "Installing $* with apt-get."
  else
    log "Installing $* with sudo apt-get (not root; sudo may ask for your password)."
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! as_root apt-get install -y -q --no-install-recommends "$@" >/dev/null 2>"$CACHE/apt.err"; then
    as_root apt-get update -q >/dev/null 2>&1 || true
    as_root apt-get install -y -q --no-install-recommends "$@" >/dev/null || die "apt-get install $* failed"
  fi
}

# What the scripts need and cannot install themselves.
check_prerequisites() {
  local missing=() need have
  need=$(sed -nE 's/^rust-version *= *"([0-9.]+)"/\1/p' "$ROOT/Cargo.toml" | head -n 1)
  if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    missing+=("a Rust toolchain >= $need (cargo and rustc on PATH; https://rustup.rs)")
  else
    have=$(rustc --version | awk '{ print $2 }')
    if [ "$(printf '%s\n%s\n' "$need" "${have%%-*}" | sort -V | head -n 1)" != "$need" ]; then
      missing+=("a Rust toolchain >= $need (rustc is $have: rustup update)")
    fi
  fi
  command -v curl >/dev/null || missing+=("curl (apt-get install curl)")
  command -v python3 >/dev/null || missing+=("python3 (apt-get install python3)")
  command -v apt-get >/dev/null || missing+=("apt-get: these scripts install PostgreSQL and the rest from Debian/Ubuntu packages")
  if [ "${#missing[@]}" -gt 0 ]; then
    printf '\033[1;31m[vigil %s] Missing, and not installed by these scripts:\033[0m\n' "$PROFILE" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
  fi
}

check_prerequisites
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
      as_root apt-get update -q >/dev/null 2>&1 || true
      as_root apt-get install -y -q --no-install-recommends rustc-web cargo-web >/dev/null 2>>"$CACHE/apt.err" || true
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

# make test runs the tests with cargo-nextest (the development machines ship it; built once otherwise,
# at the pinned version). One already installed is used whatever its version, and said.
if [ "$want_nextest" = 1 ]; then
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "Building cargo-nextest $NEXTEST_VERSION once (a few minutes)."
    cargo install cargo-nextest --version "$NEXTEST_VERSION" --locked || die "cargo install cargo-nextest failed"
  else
    have=$(cargo nextest --version 2>/dev/null | awk 'NR == 1 { print $2 }')
    [ "$have" = "$NEXTEST_VERSION" ] || log "Using the installed cargo-nextest $have (pinned: $NEXTEST_VERSION)."
  fi
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
  # Each at its pinned version (re-installed when another is there): the independent clients
  # (fastavro, confluent-kafka) and schemathesis, which fuzzes the HTTP APIs from their OpenAPI
  # documents (make test, scripts/fuzz.sh) and whose CLI options and reports change between versions.
  for pkg in "fastavro==$FASTAVRO_VERSION" "confluent-kafka==$CONFLUENT_KAFKA_VERSION" "schemathesis==$SCHEMATHESIS_VERSION"; do
    if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('${pkg%%==*}') != '${pkg#*==}')" 2>/dev/null; then
      log "Installing $pkg into $VENV."
      "$VENV/bin/pip" install -q "$pkg" || die "pip install $pkg failed"
    fi
  done
fi
log "Dependencies are in place."
