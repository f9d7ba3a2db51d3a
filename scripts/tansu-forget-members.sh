#!/usr/bin/env bash
# Clears the consumer-group membership a stopped tansu broker kept in its SQLite storage, keeping
# the groups and their committed offsets. Run it only while that broker is down (no client can be
# a member of a group on a broker that is not running); scripts/stack.sh does, before it starts one.
# Usage: scripts/tansu-forget-members.sh DIR   (DIR holds tansu.db)
#
# Why: tansu 0.6.0 keeps members (generation, leader, last heartbeat) across restarts. A static
# member (group.instance.id) that comes back after its session timeout is matched to its old
# entry, whose last heartbeat is not refreshed by the join; its first heartbeat then expels it,
# and the group stays "forming" with the expelled member id as leader, answering every SyncGroup
# with REBALANCE_IN_PROGRESS: the consumer never gets partitions again (a second `make run` hours
# after the first stood still). Committed offsets live in another table and are kept, so each
# group resumes where it was; the detector restores its state from its checkpoints as always.
source "$(dirname "$0")/lib.sh"

dir="${1:?usage: $0 DIR (the tansu working directory holding tansu.db)}"
db="$dir/tansu.db"
[ -f "$db" ] || exit 0
command -v sqlite3 >/dev/null || die "sqlite3 is missing (run scripts/install-deps.sh)"

# The count, then at most five names (a test broker holds hundreds of groups).
read -r count names < <(sqlite3 -separator ' ' "$db" "SELECT count(*),
  (SELECT group_concat(name, ', ') FROM (SELECT cg.name FROM consumer_group_detail d
     JOIN consumer_group cg ON cg.id = d.consumer_group ORDER BY cg.name LIMIT 5))
  FROM consumer_group_detail;") || die "cannot read $db"
if [ "${count:-0}" -gt 0 ]; then
  sqlite3 "$db" "DELETE FROM consumer_group_detail;" || die "cannot update $db"
  more=""; [ "$count" -gt 5 ] && more=", …"
  log "Cleared the stored membership of $count consumer group(s) ($names$more); committed offsets kept."
fi
