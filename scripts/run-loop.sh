#!/usr/bin/env bash
# make run-loop: the evidence that `make run` starts every time and stops on Ctrl-C.
# Usage: scripts/run-loop.sh [ROUNDS]   (default 30; logs in .vigil/run-loop/)
#
# Each round starts `make run` in a process group of its own, as a terminal runs a foreground
# command, and waits until traffic flows through it in this round: the producer has accepted
# events from the simulator and the detector has processed events (so it got its partitions and
# restored its state). Then it sends SIGINT to the whole group, as Ctrl-C does, and requires
# `make run`'s script to report a clean stop ("Stopped.") with every service, the broker and
# PostgreSQL gone within the bound. A failure or a hang ends the loop with a non-zero status.
# Odd rounds start with the stack down, so `make run` starts the broker and PostgreSQL and must
# stop them; even rounds start it first (`stack.sh up`), so `make run` resumes on a stack that is
# already up and must leave it up. Every round resumes on the same broker storage and database.
export VIGIL_PROFILE=run
source "$(dirname "$0")/lib.sh"

ROUNDS="${1:-30}"
READY_WITHIN=300 # s from the start to traffic (the first round builds the services)
STOP_WITHIN=$(( ($(duration_s "${SHUTDOWN_TIMEOUT:-10s}") + 5) * 5 + 30 ))
OUT="$ROOT/.vigil/run-loop"
mkdir -p "$OUT"

metric() { # url name filter -> sum of the samples whose line contains filter (0 while it is not up)
  { curl -fsS "$1/metrics" 2>/dev/null || true; } | awk -v n="$2" -v f="$3" '($1 == n || index($1, n "{") == 1) && index($0, f) { s += $NF } END { printf "%d\n", s }'
}

fail() { log "Round $round: $*"; [ -n "${pid:-}" ] && kill -9 -- "-$pid" 2>/dev/null; exit 1; }

start=$(date +%s)
for ((round = 1; round <= ROUNDS; round++)); do
  log_file="$OUT/round-$round.log"
  pre=""
  if ((round % 2 == 1)); then
    "$ROOT/scripts/stack.sh" down >"$OUT/stack-down-$round.log" 2>&1 || fail "stack down failed"
  else
    "$ROOT/scripts/stack.sh" up >"$OUT/stack-up-$round.log" 2>&1 || fail "stack-up failed (see $OUT/stack-up-$round.log)"
    pre=" (stack already up)"
  fi
  t0=$(date +%s)
  # A session and process group of its own, with SIGINT handled as in a terminal (a script's
  # background job would inherit SIGINT ignored, and `make run` could not see the Ctrl-C).
  python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL); signal.signal(signal.SIGQUIT, signal.SIG_DFL)
os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' make -C "$ROOT" run >"$log_file" 2>&1 </dev/null &
  pid=$!
  # Traffic in this round: counters start at zero with each process.
  while :; do
    kill -0 "$pid" 2>/dev/null || fail "make run exited before traffic flowed (see $log_file)"
    (( $(date +%s) - t0 > READY_WITHIN )) && fail "no traffic within $READY_WITHIN s (see $log_file)"
    accepted=$(metric http://127.0.0.1:3002 vigil_producer_events_total 'outcome="accepted"')
    processed=$(metric http://127.0.0.1:3003 vigil_detector_events_total '')
    [ "$accepted" -gt 0 ] && [ "$processed" -gt 0 ] && break
    sleep 1
  done
  t_traffic=$(( $(date +%s) - t0 ))
  # Ctrl-C at a random point of make run's 5-second status loop: while it sleeps, while it
  # queries PostgreSQL for the status line, or in between (a stop landing between the sleep and
  # the query once ended make run with status 1 and nothing stopped).
  sleep "$((RANDOM % 6)).$((RANDOM % 10))"
  t1=$(date +%s)
  kill -INT -- "-$pid"
  for ((i = 0; i < STOP_WITHIN * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && fail "make run did not stop within $STOP_WITHIN s of SIGINT (see $log_file)"
  wait "$pid" 2>/dev/null || true
  t_stop=$(( $(date +%s) - t1 ))
  grep -q 'Stopped. Logs are in' "$log_file" || fail "no clean stop reported (see $log_file)"
  grep -qE 'Stopped, but not cleanly|Stopped after a failure|exited with status' "$log_file" \
    && fail "a service did not stop cleanly (see $log_file)"
  # Nothing of this run left behind: the services, the stack it started (odd rounds), no group.
  pgrep -g "$pid" >/dev/null && fail "processes of the run's group are still running: $(pgrep -g "$pid" | tr '\n' ' ')"
  for port in 3001 3002 3003 3004; do port_open "$port" && fail "port $port is still open after the stop"; done
  if ((round % 2 == 1)); then
    port_open "$KAFKA_PORT" && fail "the broker the run started is still up"
    port_open "$PG_PORT" && fail "the PostgreSQL the run started is still up"
  else
    port_open "$KAFKA_PORT" && port_open "$PG_PORT" || fail "the stack that was up before the run is down"
  fi
  log "Round $round/$ROUNDS$pre: traffic after ${t_traffic} s (accepted $accepted, processed $processed), clean stop ${t_stop} s after SIGINT."
done
"$ROOT/scripts/stack.sh" down >/dev/null 2>&1 || true
log "All $ROUNDS rounds passed in $(( $(date +%s) - start )) s: every start had traffic, every Ctrl-C a clean stop."
