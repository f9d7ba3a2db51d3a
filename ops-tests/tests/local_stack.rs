//! The local stack's broker (tansu 0.6.0, started by scripts/stack.sh) and a consumer that comes
//! back to its group long after it left: what a second `make run` meets hours after the first.
//! With the membership tansu stored, a returning static member is expelled at its first heartbeat
//! and never gets partitions again; scripts/tansu-forget-members.sh, which stack.sh runs before
//! it starts the broker, clears that membership and keeps the committed offsets.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use vigil_common::kafka::KafkaConfig;
use vigil_ops_tests::repo;
use vigil_testkit::OwnBroker;

const TOPIC: &str = "returning";
const GROUP: &str = "returning-group";
/// Short, so the test outlives it in seconds (a group keeps the timeout of its first join), but
/// longer than tansu's 3 s pause in a static member's join plus the first heartbeat.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands partitions over the way the detector does: it takes a moment (outputs flushed, state
/// checkpointed), then commits. Heartbeats go on meanwhile; one of them is what meets the
/// coordinator's expelled-member state.
struct CommitOnRevoke;

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            std::thread::sleep(Duration::from_secs(2));
            let _ = consumer.commit(&offset_3(), CommitMode::Sync);
        }
    }
}

type Member = BaseConsumer<CommitOnRevoke>;

fn offset_3() -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(3)).unwrap();
    tpl
}

/// A static member (`group.instance.id`), as the detector and the sink run in `make run`.
fn member(kafka: &KafkaConfig) -> Member {
    let mut cc = kafka.consumer_config(GROUP);
    cc.set("group.instance.id", "member-0").set("session.timeout.ms", SESSION_TIMEOUT.as_millis().to_string());
    let c: Member = cc.create_with_context(CommitOnRevoke).unwrap();
    c.subscribe(&[TOPIC]).unwrap();
    c
}

fn assigned(c: &Member) -> usize {
    c.assignment().map(|a| a.count()).unwrap_or(0)
}

/// Polls for `period`, committing offset 3 of partition 0 while it is assigned, as the
/// detector and the sink commit as they go; the number of partitions assigned at the end.
fn poll_for(c: &Member, period: Duration) -> usize {
    let end = Instant::now() + period;
    while Instant::now() < end {
        let _ = c.poll(Duration::from_millis(100));
        if assigned(c) > 0 {
            let _ = c.commit(&offset_3(), CommitMode::Async);
        }
    }
    assigned(c)
}

/// Polls until both partitions are assigned, at most `within`.
fn wait_assigned(c: &Member, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        let _ = c.poll(Duration::from_millis(100));
        if assigned(c) == 2 {
            return true;
        }
    }
    false
}

fn committed_offset(c: &Member) -> Offset {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(TOPIC, 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    got.find_partition(TOPIC, 0).unwrap().offset()
}

fn forget_members(broker: &OwnBroker) {
    let out = Command::new(repo::path("scripts/tansu-forget-members.sh")).arg(broker.dir()).output().unwrap();
    assert!(
        out.status.success(),
        "tansu-forget-members.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(GROUP), "the script did not report clearing {GROUP}: {said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_member_returning_after_its_session_expired_gets_its_partitions_back() {
    let mut broker = OwnBroker::start();
    let kafka = broker.kafka();
    kafka.ensure_topics(&[(TOPIC, 2)]).await.unwrap();
    let producer: BaseProducer = kafka.producer_config(Duration::from_secs(30)).create().unwrap();
    for i in 0..3 {
        producer.send(BaseRecord::to(TOPIC).partition(0).key("k").payload(&format!("r{i}"))).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    drop(producer);

    // First run: the member joins, reads, commits, and goes away (static members send no
    // LeaveGroup); then the broker stops too, as `make run` stops the stack on Ctrl-C.
    let first = member(&kafka);
    assert!(wait_assigned(&first, Duration::from_secs(60)), "the member never got its partitions");
    first.commit(&offset_3(), CommitMode::Sync).unwrap();
    // Heartbeats keep going for a moment, then the member is gone.
    assert_eq!(poll_for(&first, Duration::from_secs(2)), 2, "the member lost its partitions");
    drop(first);
    broker.kill();
    std::thread::sleep(SESSION_TIMEOUT + Duration::from_secs(3));

    // What the broker's stored membership does to the returning member (the precondition of
    // this test: if tansu no longer does this, the workaround and this test can go).
    broker.restart();
    let wedged = member(&kafka);
    let held = poll_for(&wedged, Duration::from_secs(18));
    assert_eq!(
        held, 0,
        "tansu handed the returning static member its partitions on the stored membership: the \
         coordinator bug that tansu-forget-members.sh works around is gone"
    );
    drop(wedged);
    broker.kill();

    // What stack.sh does before it starts the broker: forget the membership, keep the offsets.
    forget_members(&broker);
    broker.restart();
    let back = member(&kafka);
    assert!(
        wait_assigned(&back, Duration::from_secs(60)),
        "after tansu-forget-members.sh the returning member still got no partitions"
    );
    // Past its first heartbeats (the first one is where the stale entry expelled it), it keeps them.
    assert_eq!(poll_for(&back, Duration::from_secs(5)), 2, "the member lost its partitions again");
    assert_eq!(committed_offset(&back), Offset::Offset(3), "the group's committed offset was not kept");
}
