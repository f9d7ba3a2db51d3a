#!/usr/bin/env bash
# Local Prometheus (scraping the four services) and Alertmanager (routing to the webhook
# service), for `make run`. Usage: scripts/observability.sh start|stop STATE_DIR
# Starts only what is installed (scripts/install-deps.sh --with-prometheus installs both).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cmd=${1:-}; state=${2:-$ROOT/.vigil/run}
mkdir -p "$state"

am_bin=$(command -v prometheus-alertmanager || command -v alertmanager || true)
prom_bin=$(command -v prometheus || true)

case "$cmd" in
  start)
    [ -n "$prom_bin" ] || { echo "prometheus is not installed" >&2; exit 1; }
    cd "$ROOT"
    # Sessions of their own, as make run's services: stopped by `stop`, not by a terminal's Ctrl-C.
    setsid "$prom_bin" --config.file=deploy/prometheus/prometheus.local.yml --storage.tsdb.path="$state/prometheus" \
      --web.listen-address=127.0.0.1:9090 >>"$state/logs/prometheus.log" 2>&1 </dev/null &
    echo $! >"$state/prometheus.pid"
    if [ -n "$am_bin" ]; then
      setsid "$am_bin" --config.file=deploy/alertmanager/alertmanager.local.yml --storage.path="$state/alertmanager" \
        --web.listen-address=127.0.0.1:9093 --cluster.listen-address= >>"$state/logs/alertmanager.log" 2>&1 </dev/null &
      echo $! >"$state/alertmanager.pid"
    fi
    ;;
  stop)
    for p in prometheus alertmanager; do
      [ -f "$state/$p.pid" ] && kill "$(cat "$state/$p.pid")" 2>/dev/null || true
      rm -f "$state/$p.pid"
    done
    ;;
  *) echo "usage: $0 start|stop STATE_DIR" >&2; exit 2 ;;
esac
