//! Synthetic transactions for the benchmarks: log-normal amounts over many merchants.

use rand::{Rng, SeedableRng};
use vigil_schemas::{Transaction, TransactionStatus};

pub const CATEGORIES: [&str; 12] = [
    "food",
    "travel",
    "fuel",
    "grocery",
    "electronics",
    "pharmacy",
    "books",
    "fashion",
    "home",
    "games",
    "music",
    "sports",
];

/// `n` transactions at `per_second` of event time from `start_ms`, over `merchants` merchants.
pub fn transactions(
    seed: u64,
    n: usize,
    per_second: u64,
    start_ms: i64,
    merchants: u32,
) -> impl Iterator<Item = Transaction> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let step = 1000.0 / per_second as f64;
    (0..n).map(move |i| {
        let u: f64 = rng.gen();
        let status = if u < 0.05 {
            TransactionStatus::Denied
        } else if u < 0.07 {
            TransactionStatus::Failed
        } else if u < 0.08 {
            TransactionStatus::Reversed
        } else {
            TransactionStatus::Approved
        };
        let merchant = rng.gen_range(0..merchants);
        let category = CATEGORIES[(merchant as usize) % CATEGORIES.len()];
        let ln_amount = 7.0 + (merchant % 17) as f64 * 0.1 + rng.gen_range(-0.6..0.6f64);
        Transaction {
            transaction_id: uuid::Uuid::from_u64_pair(seed, i as u64).to_string(),
            occurred_at: start_ms + (i as f64 * step) as i64,
            status,
            auth_code: match status {
                TransactionStatus::Denied => "05".into(),
                TransactionStatus::Failed => "91".into(),
                _ => "00".into(),
            },
            amount_minor: ln_amount.exp() as i64,
            currency: "EUR".into(),
            category: category.into(),
            merchant_id: format!("m-{merchant:05}"),
            received_at: start_ms + (i as f64 * step) as i64,
        }
    })
}

/// The producer's JSON form of a transaction.
pub fn json(tx: &Transaction) -> serde_json::Value {
    serde_json::json!({
        "transaction_id": tx.transaction_id,
        "occurred_at": chrono::DateTime::from_timestamp_millis(tx.occurred_at).unwrap_or_default().to_rfc3339(),
        "status": tx.status.as_str(),
        "auth_code": tx.auth_code,
        "amount_minor": tx.amount_minor,
        "currency": tx.currency,
        "category": tx.category,
        "merchant_id": tx.merchant_id,
    })
}
