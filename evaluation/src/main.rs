//! `vigil-evaluate`: scores the rate rules on the incident catalogue, side by side, and the
//! volume rules on the volume incidents.

use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use vigil_evaluation::catalogue::{Cell, Part, Plan};
use vigil_evaluation::run::Rule;
use vigil_evaluation::series_benchmark;

/// Scores Vigil's rate and volume rules on a catalogue of simulated incidents and normal days.
///
/// A rate incident multiplies the denied, failed or reversed rate, or the share of auth code
/// 51, by 1.5, 2, 3 or 6; a volume incident multiplies the transactions per minute by 0 (a
/// stop), 0.5, 2 or 3. Each lasts 3, 10 or 60 minutes, at night (about 50 transactions a minute)
/// or at the peak (about 300), in all traffic, one merchant's or one category's: 288 rate cells
/// and 72 volume cells, each run with several seeds. Normal days of the same traffic give the
/// false alarms per simulated week, the rate rules' and the volume rules' apart. Only the
/// detector's defaults (sequential) have a volume rule: the other rule sets are not run on the
/// volume cells. The detector core runs in-process (no broker, no database). Prints markdown
/// (or JSON) on stdout, progress on stderr.
#[derive(Parser, Debug)]
#[command(name = "vigil-evaluate", version)]
struct Args {
    /// Runs (seeds) per catalogue cell.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// Normal days for the false-alarm rate (one seed each; 21 days = 3 weeks).
    #[arg(long, default_value_t = 21)]
    days: u64,
    /// Normal weeks for the volume rules' false alarms (one seed each): seven days from a
    /// Thursday through one model, with a quieter weekend and a slow trend (±2 % a day).
    #[arg(long, default_value_t = 20)]
    weeks: u64,
    /// A smoke run: 24 rate and 12 volume cells covering every value of every axis, 1 seed each,
    /// 3 normal days and 1 normal week (unless --seeds, --days or --weeks are given too).
    #[arg(long)]
    quick: bool,
    /// Run one part of the catalogue only: rate (issue 16's incidents) or volume (issue 17's;
    /// then the normal days run only the rule sets with a volume rule).
    #[arg(long, value_parser = ["rate", "volume"])]
    only: Option<String>,
    /// Rules to score, comma-separated: sequential (the detector's defaults: the sequential rate
    /// rule and the volume rules), minute (its rate rule before, no volume rule), sql (the older
    /// design's v_tx_anomaly view).
    #[arg(long, value_delimiter = ',', default_value = "sequential,minute,sql",
          value_parser = ["sequential", "minute", "sql"])]
    rules: Vec<String>,
    /// Worker threads (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the report as JSON instead of markdown.
    #[arg(long)]
    json: bool,
    /// Instead of the catalogue: score `detector replay --series`'s scorer and a rolling z-score
    /// (NAB's windowed Gaussian) on labelled series in the Numenta Anomaly Benchmark's layout
    /// (DIR/data/<category>/<file>.csv, DIR/labels/combined_windows.json; the listed files
    /// present are used), with that benchmark's scoring: three profiles, thresholds optimised
    /// over all files, normalised 0 (detects nothing) to 100 (perfect).
    #[arg(long, value_name = "DIR")]
    series_benchmark: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.series_benchmark {
        let files = series_benchmark::load(dir)?;
        anyhow::ensure!(!files.is_empty(), "no labelled file of {} found under its data/", dir.display());
        let results = series_benchmark::evaluate(&files);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&results)?);
        } else {
            print!("{}", series_benchmark::markdown(&files, &results));
        }
        return Ok(());
    }
    let mut rules = Vec::new();
    for r in &args.rules {
        let rule =
            Rule::parse(r.trim()).with_context(|| format!("--rules: {r:?} is not one of sequential, minute, sql"))?;
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    rules.sort();
    let explicit = |name: &str| std::env::args().any(|a| a == name || a.starts_with(&format!("{name}=")));
    let parts: Vec<Part> = match args.only.as_deref() {
        Some(p) => vec![Part::parse(p).with_context(|| format!("--only: {p:?} is not one of rate, volume"))?],
        None => Part::ALL.to_vec(),
    };
    let plan = if args.quick {
        Plan {
            cells: vigil_evaluation::quick_cells().into_iter().filter(|c| parts.contains(&c.part())).collect(),
            seeds: if explicit("--seeds") { args.seeds } else { 1 },
            days: if explicit("--days") { args.days } else { 3 },
            weeks: if !parts.contains(&Part::Volume) {
                0
            } else if explicit("--weeks") {
                args.weeks
            } else {
                1
            },
        }
    } else {
        let weeks = if parts.contains(&Part::Volume) { args.weeks } else { 0 };
        Plan { cells: Cell::of(&parts), seeds: args.seeds, days: args.days, weeks }
    };
    let volume_rules: Vec<Rule> = rules.iter().copied().filter(|r| r.has_volume_rule()).collect();
    let names = |rules: &[Rule]| {
        if rules.is_empty() {
            "no rule".to_owned()
        } else {
            rules.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
        }
    };
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    eprintln!(
        "Scoring {} on {} rate cells, {} on {} volume cells, × {} seeds, {} normal days and {} normal weeks; {threads} threads.",
        names(&rules),
        plan.cells.iter().filter(|c| c.part() == Part::Rate).count(),
        names(&volume_rules),
        plan.cells.iter().filter(|c| c.part() == Part::Volume).count(),
        plan.seeds,
        plan.days,
        plan.weeks
    );
    let started = Instant::now();
    let last = Mutex::new(Instant::now());
    let progress = |done: usize, total: usize| {
        let Ok(mut last) = last.lock() else { return };
        if last.elapsed().as_secs_f64() >= 5.0 || done == total {
            *last = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            let eta = secs / done as f64 * (total - done) as f64;
            eprintln!("{done}/{total} runs, {secs:.0} s, about {eta:.0} s to go");
        }
    };
    let report = vigil_evaluation::evaluate(&plan, &rules, threads, &progress)
        .context("Failed to build the catalogue's scenarios")?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.markdown());
    }
    Ok(())
}
