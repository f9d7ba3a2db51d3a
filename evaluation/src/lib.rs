//! Vigil's detection-quality evaluation (`vigil-evaluate`, `make evaluate`).
//!
//! * [`catalogue`]: the incident catalogue (kind × strength × duration × volume × scope, each
//!   over several seeds: the rate incidents of issue 16 and the volume incidents of issue 17)
//!   and the normal days, built on the simulator's `busy-day` scenario.
//! * [`run`]: the simulator's generator feeding the detector core in-process, per rule.
//! * [`sql_rule`]: the older design's `v_tx_anomaly` view, reimplemented over final minutes.
//! * [`score`]: detection, delay, coverage, anomaly count and resolve time per incident; false
//!   alarms per simulated week; summaries per catalogue cell.
//! * [`series_benchmark`]: `detector replay --series`'s scorer and a rolling z-score on labelled
//!   series in the Numenta Anomaly Benchmark's layout, with that benchmark's scoring.
//! * [`report`]: the three rules side by side (markdown or JSON) and issue 16's targets; the
//!   volume incidents and the volume rules' false alarms apart, for the rule set that has them.

pub mod catalogue;
pub mod report;
pub mod run;
pub mod score;
pub mod series_benchmark;
pub mod sql_rule;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use catalogue::{Cell, Part, Plan, DAY0_MS};
use report::{CellReport, FalseAlarms, Report, VolumeReport};
use run::Rule;
use score::{of_part, IncidentScore, WEEK_MINUTES};
use vigil_schemas::AnomalyState;
use vigil_simulator::Scenario;

/// One unit of work.
#[derive(Debug, Clone, Copy)]
enum Job {
    /// A normal day.
    Day(u64),
    /// A normal week (the volume rules only).
    Week(u64),
    /// Run `run` of cell `cell`.
    Case { cell: usize, run: u64 },
}

/// Distinct anomalies `(id, dimension)` of one run, per rule set and part of the rules (a rule
/// set without a volume rule has no volume entry).
type Anomalies = BTreeMap<(Rule, Part), Vec<(String, String)>>;

enum Outcome {
    Day { minutes: i64, alarms: Anomalies },
    Week { minutes: i64, alarms: Anomalies },
    Case { cell: usize, minutes: i64, scores: BTreeMap<Rule, IncidentScore>, stray: Anomalies },
}

/// The distinct anomalies of a run of normal traffic (each counted once, when it fired), per
/// rule set and part of the rules.
fn firing(out: &run::RunOutput) -> Anomalies {
    let mut alarms = Anomalies::new();
    for (rule, em) in &out.emissions {
        for part in parts_of(*rule) {
            let mut ids: Vec<(String, String)> = of_part(em, *part)
                .into_iter()
                .filter(|e| e.state == AnomalyState::Firing)
                .map(|e| (e.id, e.dimension))
                .collect();
            ids.sort();
            ids.dedup();
            alarms.insert((*rule, *part), ids);
        }
    }
    alarms
}

/// The parts whose anomalies a rule set emits.
fn parts_of(rule: Rule) -> &'static [Part] {
    if rule.has_volume_rule() {
        &Part::ALL
    } else {
        &[Part::Rate]
    }
}

/// Runs the plan on `threads` threads, calling `progress(done, total)` now and then, and
/// returns the report.
///
/// Rate cells run every rule set in `rules`; volume cells only those with a volume rule (the
/// others are reported as having none). Normal days run every rule set, or with volume cells
/// only, those with a volume rule.
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
    let seed_index: Vec<usize> = plan.cells.iter().map(Cell::index).collect();
    let volume_rules: Vec<Rule> = rules.iter().copied().filter(|r| r.has_volume_rule()).collect();
    let rules_for = |part: Part| -> &[Rule] {
        match part {
            Part::Rate => rules,
            Part::Volume => &volume_rules,
        }
    };
    let day_rules: &[Rule] = if plan.cells.iter().all(|c| c.part() == Part::Volume) && !plan.cells.is_empty() {
        &volume_rules
    } else {
        rules
    };
    // Longest first, so the threads finish together.
    let mut jobs: Vec<Job> =
        if volume_rules.is_empty() { Vec::new() } else { (0..plan.weeks).map(Job::Week).collect() };
    if !day_rules.is_empty() {
        jobs.extend((0..plan.days).map(Job::Day));
    }
    let mut cases: Vec<Job> = (0..plan.cells.len())
        .filter(|cell| !rules_for(plan.cells[*cell].part()).is_empty())
        .flat_map(|cell| (0..plan.seeds).map(move |run| Job::Case { cell, run }))
        .collect();
    cases.sort_by_key(|j| match j {
        Job::Case { cell, .. } => std::cmp::Reverse(plan.cells[*cell].duration),
        Job::Day(_) | Job::Week(_) => std::cmp::Reverse(0),
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
                        let out = run::run(base.clone(), 9_000_000 + d, DAY0_MS + d as i64 * 86_400_000, day_rules);
                        transactions.fetch_add(out.transactions, Ordering::Relaxed);
                        Outcome::Day { minutes: base.minutes(), alarms: firing(&out) }
                    }
                    Job::Week(w) => {
                        let (scenario, start) = catalogue::normal_week(&base, w);
                        let out = run::run(scenario.clone(), 8_000_000 + w, start, &volume_rules);
                        transactions.fetch_add(out.transactions, Ordering::Relaxed);
                        Outcome::Week { minutes: scenario.minutes(), alarms: firing(&out) }
                    }
                    Job::Case { cell, run } => {
                        let (scenario, start) = scenarios[cell].clone();
                        let part = plan.cells[cell].part();
                        let seed = plan.cells[cell].seed(seed_index[cell], run);
                        let out = run::run(scenario, seed, start, rules_for(part));
                        transactions.fetch_add(out.transactions, Ordering::Relaxed);
                        let truth = &out.truth.incidents[0];
                        // Scored on its own part's rules: a rate spike's extra transactions may
                        // lift the volume, which is counted apart.
                        let scores = out
                            .emissions
                            .iter()
                            .map(|(rule, em)| (*rule, score::score_incident(truth, &of_part(em, part))))
                            .collect();
                        let mut stray = Anomalies::new();
                        for (rule, em) in &out.emissions {
                            for p in parts_of(*rule) {
                                stray.insert((*rule, *p), score::unexplained(truth, &of_part(em, *p)));
                            }
                        }
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
    // Books of anomalies by where they were seen: normal days, rate-incident runs,
    // volume-incident runs; each by the part of the rules that raised them.
    let mut books: BTreeMap<(Option<Part>, Part), BTreeMap<Rule, FalseAlarms>> = BTreeMap::new();
    let mut weeks: BTreeMap<Rule, FalseAlarms> = BTreeMap::new();
    let mut add = |seen_in: Option<Part>, minutes: i64, anomalies: Anomalies| {
        for ((rule, part), ids) in anomalies {
            books.entry((seen_in, part)).or_default().entry(rule).or_default().add(minutes, ids);
        }
    };
    for o in outcomes {
        match o {
            Outcome::Case { cell, minutes, scores, stray } => {
                for (rule, s) in scores {
                    per_cell[cell].entry(rule).or_default().push(s);
                }
                add(Some(plan.cells[cell].part()), minutes, stray);
            }
            Outcome::Day { minutes, alarms } => add(None, minutes, alarms),
            Outcome::Week { minutes, alarms } => {
                // Booked apart: only their volume anomalies are reported.
                for ((rule, part), ids) in alarms {
                    if part == Part::Volume {
                        weeks.entry(rule).or_default().add(minutes, ids);
                    }
                }
            }
        }
    }
    for f in books.values_mut().flat_map(|b| b.values_mut()).chain(weeks.values_mut()) {
        f.per_week = if f.minutes > 0 { f.count as f64 * WEEK_MINUTES / f.minutes as f64 } else { 0.0 };
    }
    let mut book = |seen_in: Option<Part>, part: Part| books.remove(&(seen_in, part)).unwrap_or_default();
    let (mut rate_cells, mut volume_cells) = (Vec::new(), Vec::new());
    for (cell, by_rule) in plan.cells.iter().zip(per_cell) {
        let (scope_volume, total_volume) = cell.volumes(&base);
        let report = CellReport {
            cell: *cell,
            scope_volume,
            total_volume,
            results: by_rule.iter().map(|(r, s)| (*r, score::summarise(s))).collect(),
            scores: by_rule,
        };
        match cell.part() {
            Part::Rate => rate_cells.push(report),
            Part::Volume => volume_cells.push(report),
        }
    }
    let volume = VolumeReport {
        rules: volume_rules.clone(),
        cells: volume_cells,
        false_alarms: book(None, Part::Volume),
        weeks,
        unexplained: book(Some(Part::Volume), Part::Volume),
        in_rate_runs: book(Some(Part::Rate), Part::Volume),
        rate_in_volume_runs: book(Some(Part::Volume), Part::Rate),
    };
    let mut report = Report {
        rules: rules.to_vec(),
        seeds: plan.seeds,
        days: plan.days,
        weeks: plan.weeks,
        cells: rate_cells,
        false_alarms: book(None, Part::Rate),
        unexplained: book(Some(Part::Rate), Part::Rate),
        targets: Vec::new(),
        volume,
        transactions: transactions.into_inner(),
        seconds: started.elapsed().as_secs_f64(),
        threads,
    };
    report.targets = report::targets(&report);
    Ok(report)
}

/// The cells `--quick` runs: every value of every axis, in 24 rate cells instead of 288 (each
/// strength at each duration once, alternating kinds, volumes and scopes) and 12 volume cells
/// instead of 72 (each factor at each duration once, alternating volumes and scopes).
pub fn quick_cells() -> Vec<Cell> {
    let mut out = Vec::new();
    let mut k = 0usize;
    for strength in catalogue::STRENGTHS {
        for duration in catalogue::DURATIONS {
            for volume in catalogue::Volume::ALL {
                let kind = catalogue::Kind::RATES[k % 4];
                let scope = catalogue::Scope::ALL[k % 3];
                out.push(Cell { kind, strength, duration, volume, scope });
                k += 1;
            }
        }
    }
    for (k, (strength, duration)) in
        catalogue::VOLUME_FACTORS.into_iter().flat_map(|f| catalogue::DURATIONS.map(|d| (f, d))).enumerate()
    {
        let (volume, scope) = (catalogue::Volume::ALL[k % 2], catalogue::Scope::ALL[k % 3]);
        out.push(Cell { kind: catalogue::Kind::Volume, strength, duration, volume, scope });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_catalogue_still_covers_every_value_of_every_axis() {
        let all = quick_cells();
        let (cells, volume): (Vec<Cell>, Vec<Cell>) = all.iter().partition(|c| c.part() == Part::Rate);
        assert_eq!((cells.len(), volume.len()), (24, 12));
        for kind in catalogue::Kind::RATES {
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
        for f in catalogue::VOLUME_FACTORS {
            for d in catalogue::DURATIONS {
                assert!(volume.iter().any(|c| c.strength == f && c.duration == d), "×{f} {d}m");
            }
        }
        for v in catalogue::Volume::ALL {
            assert!(volume.iter().any(|c| c.volume == v), "{v:?}");
        }
        for scope in catalogue::Scope::ALL {
            assert!(volume.iter().any(|c| c.scope == scope), "{scope:?}");
        }
        assert!(all.iter().all(|c| c.index() < Cell::all().len()), "every quick cell is a catalogue cell");
    }
}
