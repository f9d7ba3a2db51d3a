//! Signals and `/proc` readings for processes the harness started.

use std::path::Path;

/// Sends `signal` (a name such as `STOP`, `CONT`, `TERM`, `KILL`) to `pid` with kill(1), so the
/// crate needs no unsafe code.
pub fn signal(pid: u32, signal: &str) -> std::io::Result<()> {
    let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("kill -{signal} {pid} failed: {status}")))
    }
}

/// Resident memory (`VmRSS`) in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Open file descriptors: the entries of `/proc/<pid>/fd`.
pub fn fd_count(pid: u32) -> Option<u64> {
    std::fs::read_dir(Path::new("/proc").join(pid.to_string()).join("fd")).ok().map(|d| d.count() as u64)
}

/// Threads (`Threads:` in `/proc/<pid>/status`).
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_kib() {
        let status = "Name:\tproducer\nVmPeak:\t  900 kB\nVmRSS:\t   51234 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(51234));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn this_process_has_memory_descriptors_and_threads() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(fd_count(me).unwrap() >= 3);
        assert!(threads(me).unwrap() >= 1);
    }
}
