//! Prints a result and appends it, with the date and machine, to `bench/results/<name>.txt`.

use std::io::Write;

pub fn publish(name: &str, lines: &[String]) {
    let header = format!(
        "# {name} — {} — {} cores — {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if cfg!(debug_assertions) { "DEBUG build (use --release)" } else { "release build" }
    );
    println!("{header}");
    for l in lines {
        println!("{l}");
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join(format!("{name}.txt"))) {
        let _ = writeln!(f, "{header}");
        for l in lines {
            let _ = writeln!(f, "{l}");
        }
        let _ = writeln!(f);
    }
}

pub fn rate(n: usize, secs: f64) -> f64 {
    n as f64 / secs.max(1e-9)
}

/// Resident memory of this process, from /proc.
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}
