//! `make soak`: a steady rate through the whole stack for a while, sampling each service's
//! resident memory and open descriptors; fails if either grows without bound (see
//! `vigil_chaos::soak`), if a service restarted, or if the books do not balance at the end.
//!
//! SOAK_DURATION (default 10m), SOAK_RATE (events/s, default 100), SOAK_INTERVAL (default 5s).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use vigil_chaos::books::{self, Books};
use vigil_chaos::soak::{self, ProcessSamples};
use vigil_chaos::stack::{Stack, StackOptions};
use vigil_chaos::{proc, traffic};
use vigil_common::config::parse_duration;
use vigil_simulator::run::Speed;

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() {
    let duration = parse_duration(&env_or("SOAK_DURATION", "10m")).unwrap_or_else(|e| {
        eprintln!("SOAK_DURATION: {e}");
        std::process::exit(2)
    });
    let interval = parse_duration(&env_or("SOAK_INTERVAL", "5s")).unwrap_or_else(|e| {
        eprintln!("SOAK_INTERVAL: {e}");
        std::process::exit(2)
    });
    let rate: f64 = env_or("SOAK_RATE", "100").parse().unwrap_or_else(|e| {
        eprintln!("SOAK_RATE: {e}");
        std::process::exit(2)
    });
    let code = run(duration, interval, rate).await;
    std::process::exit(code);
}

async fn run(duration: Duration, interval: Duration, rate: f64) -> i32 {
    let started = Utc::now();
    eprintln!("Soak: {rate} events/s for {} s, sampling every {} s.", duration.as_secs(), interval.as_secs());
    let mut opts = StackOptions::new("soak");
    // The deployment's defaults: windows close by event time, idle after 10 s.
    opts.idle_timeout = "10s".into();
    let mut stack = Stack::start(opts).await;
    let send = traffic::Send::new(&stack.url("producer"));

    // History first (the rate baselines), then the steady stream.
    let start = Utc::now() - chrono::Duration::minutes(16);
    let mut total = send.run(traffic::history(16, 600.0), 7, start, Speed::Max, CancellationToken::new()).await;
    let stop = CancellationToken::new();
    let stream = {
        let (send, stop) = (send.clone(), stop.clone());
        tokio::spawn(async move { send.run(traffic::live(rate * 60.0), 8, Utc::now(), Speed::Factor(1.0), stop).await })
    };

    let mut samples: BTreeMap<String, ProcessSamples> = BTreeMap::new();
    let mut pids: BTreeMap<String, u32> = BTreeMap::new();
    let t0 = Instant::now();
    let mut next_print = Duration::ZERO;
    while t0.elapsed() < duration {
        let t = t0.elapsed().as_secs_f64();
        let mut current: Vec<(String, Option<u32>, bool)> =
            stack.names().into_iter().map(|n| (n.clone(), stack.pid(&n), true)).collect();
        current.push(("broker".into(), stack.broker.as_ref().and_then(|b| b.lock().ok().and_then(|b| b.pid())), false));
        for (name, pid, judged) in current {
            let Some(pid) = pid else { continue };
            let entry = samples.entry(name.clone()).or_insert_with(|| ProcessSamples::new(&name, judged));
            if pids.insert(name.clone(), pid).is_some_and(|old| old != pid) {
                entry.restarted = true;
            }
            if let (Some(rss), Some(fds)) = (proc::rss_kib(pid), proc::fd_count(pid)) {
                entry.rss_kib.push(t, rss as f64);
                entry.fds.push(t, fds as f64);
            }
        }
        if t0.elapsed() >= next_print {
            let line: Vec<String> = samples
                .values()
                .filter_map(|p| {
                    let (r, f) = (p.rss_kib.points.last()?, p.fds.points.last()?);
                    Some(format!("{} {:.0} MiB/{} fds", p.name, r.1 / 1024.0, f.1))
                })
                .collect();
            eprintln!("[soak {:>5.0}s] {}", t, line.join(" | "));
            next_print += Duration::from_secs(60);
        }
        tokio::time::sleep(interval).await;
    }
    stop.cancel();
    let live = stream.await.unwrap_or_default();
    traffic::add(&mut total, &live);

    // The books, after the last windows close.
    let mut b = Books {
        sent: total.sent,
        accepted: total.accepted,
        refused: total.refused,
        unavailable: total.unavailable,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (kafka, topic) = (stack.kafka(), stack.topics.transactions.clone());
        if let Ok(Ok(p)) = tokio::task::spawn_blocking(move || books::published(&kafka, &topic)).await {
            b.published = p.distinct_ids;
        }
        if let Ok(c) = books::counted(&stack.pool).await {
            b.counted = c;
        }
        if b.problems().is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let unexpected = stack.unexpected_restarts();
    stack.shutdown();

    let all: Vec<ProcessSamples> = samples.into_values().collect();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "Vigil soak, {}: {rate} events/s for {:.0} s ({} events sent, {} accepted, {} counted), samples every {} s.",
        started.format("%Y-%m-%d %H:%M UTC"),
        duration.as_secs_f64(),
        total.sent,
        total.accepted,
        b.counted.total(),
        interval.as_secs()
    );
    let _ = writeln!(
        report,
        "Verdict per resource: the last third's maximum against the middle third's (memory: 5 % + 8 MiB, \
         descriptors: + 16); the first third is warm-up. Slope: least squares over the last two thirds.\n"
    );
    report.push_str(&soak::table(&all));
    let mut failed = Vec::new();
    for p in all.iter().filter(|p| p.failed()) {
        failed.push(format!("{} grows or restarted", p.name));
    }
    for e in &unexpected {
        failed.push(format!("unexpected exit: {}", e.what.lines().next().unwrap_or("")));
    }
    failed.extend(b.problems());
    let _ = writeln!(
        report,
        "\n{}",
        if failed.is_empty() { "PASSED".to_string() } else { format!("FAILED:\n  {}", failed.join("\n  ")) }
    );
    println!("{report}");

    let dir = vigil_chaos::workspace_root().join(".vigil").join("soak");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("report.txt"), &report);
    let mut csv = String::from("process,seconds,rss_kib,fds\n");
    for p in &all {
        for ((t, r), (_, f)) in p.rss_kib.points.iter().zip(&p.fds.points) {
            let _ = writeln!(csv, "{},{t:.1},{r:.0},{f:.0}", p.name);
        }
    }
    let _ = std::fs::write(dir.join("samples.csv"), csv);
    eprintln!("Report in {}, samples in {}.", dir.join("report.txt").display(), dir.join("samples.csv").display());
    i32::from(!failed.is_empty())
}
