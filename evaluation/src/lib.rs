//! Vigil's detection-quality evaluation (`vigil-evaluate`, `make evaluate`).
//!
//! * [`catalogue`]: the incident catalogue (kind × strength × duration × volume × scope, each
//!   over several seeds) and the normal days, built on the simulator's `busy-day` scenario.
//! * [`run`]: the simulator's generator feeding the detector core in-process, per rule.
//! * [`sql_rule`]: the older design's `v_tx_anomaly` view, reimplemented over final minutes.
//! * [`score`]: detection, delay, coverage, anomaly count and resolve time per incident; false
//!   alarms per simulated week; summaries per catalogue cell.
//! * [`report`]: the three rules side by side (markdown or JSON) and issue 16's targets.

pub mod catalogue;
pub mod report;
pub mod run;
pub mod score;
pub mod sql_rule;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use catalogue::{Cell, Plan, DAY0_MS};
use report::{CellReport, FalseAlarms, Report};
use run::Rule;
use score::{IncidentScore, WEEK_MINUTES};
use vigil_simulator::Scenario;

/// One unit of work.
#[derive(Debug, Clone, Copy)]
enum Job {
    /// A normal day.
    Day(u64),
    /// Run `run` of cell `cell`.
    Case { cell: usize, run: u64 },
}

enum Outcome {
    Day {
        minutes: i64,
        alarms: BTreeMap<Rule, Vec<(String, String)>>,
    },
    Case {
        cell: usize,
        minutes: i64,
        scores: BTreeMap<Rule, IncidentScore>,
        stray: BTreeMap<Rule, Vec<(String, String)>>,
    },
}

/// Runs the plan on `threads` threads, calling `progress(done, total)` now and then, and
/// returns the report.
pub fn evaluate(
    plan: &Plan,
    rules: &[Rule],
    threads: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> vigil_simulator::Result<Report> {
    let started = Instant::now();
    let base = catalogue::base()?;
    // Build every case's scenario up front, so a problem shows before hours of work.
    let scenarios: Vec<(Scenario, i64)> = plan.cells.iter().map(|c| c.scenario(&base)).collect::<Result<_, _>>()?;
    // Longest first, so the threads finish together.
    let mut jobs: Vec<Job> = (0..plan.days).map(Job::Day).collect();
    let mut cases: Vec<Job> =
        (0..plan.cells.len()).flat_map(|cell| (0..plan.seeds).map(move |run| Job::Case { cell, run })).collect();
    cases.sort_by_key(|j| match j {
        Job::Case { cell, .. } => std::cmp::Reverse(plan.cells[*cell].duration),
        Job::Day(_) => std::cmp::Reverse(0),
    });
    jobs.extend(cases);

    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Outcome>> = Mutex::new(Vec::with_capacity(jobs.len()));
    let transactions = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let outcome = match *job {
                    Job::Day(d) => {
                        let out = run::run(base.clone(), 9_000_000 + d, DAY0_MS + d as i64 * 86_400_000, rules);
                        transactions.fetch_add(out.transactions, Ordering::Relaxed);
                        let alarms = out
                            .emissions
                            .iter()
                            .map(|(rule, em)| {
                                let mut ids: Vec<(String, String)> = em
                                    .iter()
                                    .filter(|e| e.state == vigil_schemas::AnomalyState::Firing)
                                    .map(|e| (e.id.clone(), e.dimension.clone()))
                                    .collect();
                                ids.sort();
                                ids.dedup();
                                (*rule, ids)
                            })
                            .collect();
                        Outcome::Day { minutes: base.minutes(), alarms }
                    }
                    Job::Case { cell, run } => {
                        let (scenario, start) = scenarios[cell].clone();
                        let out = run::run(scenario, plan.cells[cell].seed(cell, run), start, rules);
                        transactions.fetch_add(out.transactions, Ordering::Relaxed);
                        let truth = &out.truth.incidents[0];
                        let scores =
                            out.emissions.iter().map(|(rule, em)| (*rule, score::score_incident(truth, em))).collect();
                        let stray =
                            out.emissions.iter().map(|(rule, em)| (*rule, score::unexplained(truth, em))).collect();
                        Outcome::Case { cell, minutes: scenarios[cell].0.minutes(), scores, stray }
                    }
                };
                if let Ok(mut o) = outcomes.lock() {
                    o.push(outcome);
                }
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, jobs.len());
            });
        }
    });

    let outcomes = outcomes.into_inner().unwrap_or_default();
    let mut per_cell: Vec<BTreeMap<Rule, Vec<IncidentScore>>> = vec![BTreeMap::new(); plan.cells.len()];
    let mut false_alarms: BTreeMap<Rule, FalseAlarms> = rules.iter().map(|r| (*r, FalseAlarms::default())).collect();
    let mut unexplained: BTreeMap<Rule, FalseAlarms> = rules.iter().map(|r| (*r, FalseAlarms::default())).collect();
    let add = |book: &mut BTreeMap<Rule, FalseAlarms>, rule: Rule, minutes: i64, ids: Vec<(String, String)>| {
        let f = book.entry(rule).or_default();
        f.minutes += minutes;
        f.count += ids.len();
        for (_, dim) in ids {
            *f.by_dimension.entry(dim).or_default() += 1;
        }
    };
    for o in outcomes {
        match o {
            Outcome::Case { cell, minutes, scores, stray } => {
                for (rule, s) in scores {
                    per_cell[cell].entry(rule).or_default().push(s);
                }
                for (rule, ids) in stray {
                    add(&mut unexplained, rule, minutes, ids);
                }
            }
            Outcome::Day { minutes, alarms } => {
                for (rule, ids) in alarms {
                    add(&mut false_alarms, rule, minutes, ids);
                }
            }
        }
    }
    for f in false_alarms.values_mut().chain(unexplained.values_mut()) {
        f.per_week = if f.minutes > 0 { f.count as f64 * WEEK_MINUTES / f.minutes as f64 } else { 0.0 };
    }
    let cells = plan
        .cells
        .iter()
        .zip(per_cell)
        .map(|(cell, by_rule)| {
            let (scope_volume, total_volume) = cell.volumes(&base);
            CellReport {
                cell: *cell,
                scope_volume,
                total_volume,
                results: by_rule.iter().map(|(r, s)| (*r, score::summarise(s))).collect(),
                scores: by_rule,
            }
        })
        .collect();
    let mut report = Report {
        rules: rules.to_vec(),
        seeds: plan.seeds,
        days: plan.days,
        cells,
        false_alarms,
        unexplained,
        targets: Vec::new(),
        transactions: transactions.into_inner(),
        seconds: started.elapsed().as_secs_f64(),
        threads,
    };
    report.targets = report::targets(&report);
    Ok(report)
}

/// The cells `--quick` runs: every value of every axis, in 24 cells instead of 288 (each
/// strength at each duration once, alternating kinds, volumes and scopes).
pub fn quick_cells() -> Vec<Cell> {
    let mut out = Vec::new();
    let mut k = 0usize;
    for strength in catalogue::STRENGTHS {
        for duration in catalogue::DURATIONS {
            for volume in catalogue::Volume::ALL {
                let kind = catalogue::Kind::ALL[k % 4];
                let scope = catalogue::Scope::ALL[k % 3];
                out.push(Cell { kind, strength, duration, volume, scope });
                k += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_catalogue_still_covers_every_value_of_every_axis() {
        let cells = quick_cells();
        assert_eq!(cells.len(), 24);
        for kind in catalogue::Kind::ALL {
            assert!(cells.iter().any(|c| c.kind == kind), "{kind:?}");
        }
        for scope in catalogue::Scope::ALL {
            assert!(cells.iter().any(|c| c.scope == scope), "{scope:?}");
        }
        for s in catalogue::STRENGTHS {
            for d in catalogue::DURATIONS {
                for v in catalogue::Volume::ALL {
                    assert!(cells.iter().any(|c| c.strength == s && c.duration == d && c.volume == v));
                }
            }
        }
    }
}
