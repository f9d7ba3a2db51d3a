#!/usr/bin/env bash
# Local Prometheus (scraping the four services) and Alertmanager (routing to the webhook
# service), for `make run`. Usage: scripts/observability.sh start|stop STATE_DIR
# Starts only what is installed (scripts/install-deps.sh --with-prometheus installs both).
#
# Ports: 9090 and 9093 when free. Debian's prometheus and prometheus-alertmanager packages start
# their own services there (scraping none of Vigil's); then this picks the next free ports, says
# so, and writes the URLs to STATE_DIR/observability.env (make run copies them to .vigil/run.env).
# The configurations are rendered into STATE_DIR from deploy/prometheus/prometheus.local.yml and
# deploy/alertmanager/alertmanager.local.yml with the ports actually in use: the services' (from
# VIGIL_PORT_BASE, as make run), Prometheus's and Alertmanager's.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cmd=${1:-}; state=${2:-$ROOT/.vigil/run}
mkdir -p "$state" "$state/logs"

am_bin=$(command -v prometheus-alertmanager || command -v alertmanager || true)
prom_bin=$(command -v prometheus || true)
base="${VIGIL_PORT_BASE:-3000}"

# The first port from $1 up that nothing listens on and is not $2.
free_port() {
  local p=$1
  while port_open "$p" || [ "$p" = "${2:-}" ]; do
    p=$((p + 1))
    [ "$p" -lt $(($1 + 100)) ] || die "no free port in $1..$((p - 1))"
  done
  echo "$p"
}

case "$cmd" in
  start)
    [ -n "$prom_bin" ] || { echo "prometheus is not installed" >&2; exit 1; }
    want_prom="${VIGIL_PROMETHEUS_PORT:-9090}"; want_am="${VIGIL_ALERTMANAGER_PORT:-9093}"
    prom_port=$(free_port "$want_prom")
    am_port=$(free_port "$want_am" "$prom_port")
    [ "$prom_port" = "$want_prom" ] \
      || log "Port $want_prom is taken (by Debian's own prometheus service?); Vigil's Prometheus listens on $prom_port instead."
    if [ -n "$am_bin" ] && [ "$am_port" != "$want_am" ]; then
      log "Port $want_am is taken (by Debian's own prometheus-alertmanager service?); Vigil's Alertmanager listens on $am_port instead."
    fi
    # The configurations with the ports in use; paths made absolute (they are read from $state).
    sed -e "s#127.0.0.1:9093#127.0.0.1:$am_port#; s#127.0.0.1:9090#127.0.0.1:$prom_port#" \
      -e "s#127.0.0.1:3001#127.0.0.1:$((base + 1))#; s#127.0.0.1:3002#127.0.0.1:$((base + 2))#" \
      -e "s#127.0.0.1:3003#127.0.0.1:$((base + 3))#; s#127.0.0.1:3004#127.0.0.1:$((base + 4))#" \
      -e "s#^  - rules/\*.yml#  - $ROOT/deploy/prometheus/rules/*.yml#" \
      "$ROOT/deploy/prometheus/prometheus.local.yml" >"$state/prometheus.yml"
    sed -e "s#127.0.0.1:3001#127.0.0.1:$((base + 1))#" \
      -e "s#credentials_file: .*webhook.token#credentials_file: $state/webhook.token#" \
      "$ROOT/deploy/alertmanager/alertmanager.local.yml" >"$state/alertmanager.yml"
    # Sessions of their own, as make run's services: stopped by `stop`, not by a terminal's Ctrl-C.
    setsid "$prom_bin" --config.file="$state/prometheus.yml" --storage.tsdb.path="$state/prometheus" \
      --web.listen-address="127.0.0.1:$prom_port" >>"$state/logs/prometheus.log" 2>&1 </dev/null &
    echo $! >"$state/prometheus.pid"
    echo "PROMETHEUS_URL=http://127.0.0.1:$prom_port" >"$state/observability.env"
    if [ -n "$am_bin" ]; then
      setsid "$am_bin" --config.file="$state/alertmanager.yml" --storage.path="$state/alertmanager" \
        --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= >>"$state/logs/alertmanager.log" 2>&1 </dev/null &
      echo $! >"$state/alertmanager.pid"
      echo "ALERTMANAGER_URL=http://127.0.0.1:$am_port" >>"$state/observability.env"
    else
      log "prometheus-alertmanager is not installed: Prometheus evaluates the alert rules but sends them nowhere."
    fi
    # Ready, or say why not: a Prometheus that did not start would leave the services unscraped.
    for _ in $(seq 1 150); do
      curl -fsS "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 && break
      kill -0 "$(cat "$state/prometheus.pid")" 2>/dev/null || die "Prometheus exited at start (see $state/logs/prometheus.log)"
      sleep 0.2
    done
    curl -fsS "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 || die "Prometheus did not become ready on $prom_port"
    log "Prometheus on 127.0.0.1:$prom_port scrapes the webhook, producer, detector and sink on ports $((base + 1))-$((base + 4))."
    ;;
  stop)
    for p in prometheus alertmanager; do
      [ -f "$state/$p.pid" ] && kill "$(cat "$state/$p.pid")" 2>/dev/null || true
      rm -f "$state/$p.pid"
    done
    rm -f "$state/observability.env"
    ;;
  *) echo "usage: $0 start|stop STATE_DIR" >&2; exit 2 ;;
esac
