#!/usr/bin/env bash
# make deploy-up / make deploy-down: the whole stack in containers (deploy/docker-compose.yml).
# Usage: scripts/deploy.sh up|down [extra docker compose arguments]
# Needs Docker with the compose plugin (`docker compose`), or the standalone docker-compose.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
FILE="$ROOT/deploy/docker-compose.yml"
cmd=${1:-}; shift || true

die() { printf '\033[1;31m[vigil deploy] %s\033[0m\n' "$*" >&2; exit 1; }
log() { printf '\033[1;34m[vigil deploy]\033[0m %s\n' "$*" >&2; }

case "$cmd" in
  up | down) ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif command -v docker >/dev/null 2>&1; then
  die "docker is installed but has no compose plugin: install docker-compose-plugin (or docker-compose) and re-run"
else
  die "Docker is not installed (no docker on PATH): the compose stack needs Docker Engine with the compose plugin (https://docs.docker.com/engine/install/). Without Docker, 'make run' runs the same services on this machine."
fi
docker_ok() { command -v docker >/dev/null 2>&1 || return 0; docker info >/dev/null 2>&1; }
docker_ok || die "the Docker daemon does not answer ('docker info' failed): start it (systemctl start docker) or add yourself to the docker group"

case "$cmd" in
  up)
    log "Building the image and starting the stack: ${compose[*]} -f deploy/docker-compose.yml up -d --build"
    "${compose[@]}" -f "$FILE" up -d --build "$@"
    log "Up. Grafana http://localhost:3000 (admin/admin), ingest http://localhost:3002, alerts http://localhost:3001;"
    log "pushed alerts: ${compose[*]} -f deploy/docker-compose.yml logs -f alert-receiver. 'make deploy-down' stops it."
    ;;
  down)
    log "Stopping the stack (its volumes stay; add ARGS=-v to remove them): ${compose[*]} -f deploy/docker-compose.yml down"
    "${compose[@]}" -f "$FILE" down "$@"
    ;;
esac
