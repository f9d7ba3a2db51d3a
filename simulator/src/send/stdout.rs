//! NDJSON on standard output, one transaction per line in the producer's JSON form: for
//! `simulator run --target stdout | detector replay`, or to keep a scenario as a file.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::{Batch, BatchOutcome, Sending};

#[derive(Clone, Default)]
pub struct StdoutTarget {
    lock: Arc<Mutex<()>>,
}

impl StdoutTarget {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn start(&self, batch: Batch) -> Sending {
        // Written before returning, so lines keep the generator's order.
        let mut out = BatchOutcome::default();
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        for tx in &batch.items {
            let line = serde_json::to_string(tx).unwrap_or_default();
            match writeln!(w, "{line}") {
                Ok(()) => out.accepted += 1,
                Err(e) => {
                    out.unavailable += 1;
                    out.fatal.get_or_insert_with(|| format!("cannot write to standard output: {e}"));
                }
            }
        }
        if let Err(e) = w.flush() {
            out.fatal.get_or_insert_with(|| format!("cannot write to standard output: {e}"));
        }
        Box::pin(async move { out })
    }
}
