#!/usr/bin/env bash
# The compose stack's init step (service `redpanda-init`): sets the cluster properties the
# pipeline relies on and creates every topic with its partition count, then exits 0.
# Idempotent: topics that exist are left alone, so `docker compose up` may run it again.
#
# The topics and partition counts are the ones scripts/stack.sh creates for the local stack
# (tests in ops-tests/tests/compose.rs keep the two lists equal). The detector needs
# detector-checkpoints to have at least as many partitions as transactions.
set -euo pipefail

RPK=${RPK:-rpk}
BROKERS=${KAFKA_BROKERS:-redpanda:9092}
ADMIN=${REDPANDA_ADMIN:-redpanda:9644}

TOPICS=("transactions:6" "tx-partials:1" "tx-minute:3" "anomalies:3" "detector-checkpoints:6" "detector-merge-checkpoints:1" "vigil-dead-letter:1" "transaction-verdicts:3" "detector-settings:1")
# State snapshots, and rule settings keyed by scope and minute: only the newest record per key
# matters, so the broker may compact the rest.
COMPACTED=("detector-checkpoints" "detector-merge-checkpoints" "detector-settings")

rpk_() { "$RPK" "$@" -X "brokers=$BROKERS" -X "admin.hosts=$ADMIN"; }

# A topic nobody created on purpose (a typo in a service's configuration) must fail loudly,
# not appear with the default partition count.
rpk_ cluster config set auto_create_topics_enabled false

for t in "${TOPICS[@]}"; do
  name=${t%%:*}
  parts=${t##*:}
  if rpk_ topic describe "$name" >/dev/null 2>&1; then
    echo "Topic $name exists; left as it is."
    continue
  fi
  args=(topic create "$name" --partitions "$parts" --replicas 1)
  for c in "${COMPACTED[@]}"; do
    if [ "$c" = "$name" ]; then
      args+=(--topic-config cleanup.policy=compact)
    fi
  done
  rpk_ "${args[@]}"
done
echo "Topics are in place."
