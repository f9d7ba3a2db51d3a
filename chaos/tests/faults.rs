//! The fault suite against the whole stack as real processes (see `vigil_chaos::faults`).
//!
//! The short form runs with `make test`; `make chaos` runs the long form (`--ignored`).

#![allow(clippy::unwrap_used)]

use vigil_chaos::faults::{self, SuiteOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_accepted_event_is_counted_exactly_once_through_every_fault() {
    let report = faults::run(SuiteOptions::short()).await;
    let path = report.publish();
    assert!(
        report.passed(),
        "the fault suite failed (report in {}):\n{}",
        path.display(),
        report.problems().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the long form (about 20 minutes): make chaos"]
async fn long_form_every_fault_twice_with_a_thirty_second_outage() {
    let report = faults::run(SuiteOptions::long()).await;
    let path = report.publish();
    assert!(
        report.passed(),
        "the fault suite failed (report in {}):\n{}",
        path.display(),
        report.problems().join("\n")
    );
}
