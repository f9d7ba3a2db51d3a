//! The generator: a scenario, a seed and a start time in, transactions in event-time order out,
//! with the ground truth of every incident known before the first transaction.
//!
//! Traffic is generated one event-time minute at a time. Each minute is cut at incident
//! boundaries into pieces; in each piece every stream (a status, or an auth code during a surge)
//! gets a Poisson count with the piece's expected volume, and each event a uniform time within
//! the piece, a category and merchant by weight, an auth code by the status's mix and a clipped
//! log-normal amount (see [`crate::amounts`]). The minute's events are then sorted by time.
//!
//! Everything random comes from ChaCha8 streams seeded with `--seed`, whose output is fixed by
//! its specification (unlike `StdRng`), so a seed means the same traffic on every machine and
//! every version. Transaction ids are UUIDv5 of the run's parameters and the event's position,
//! so the same command with the same `--start` reproduces the same ids too.

use std::collections::VecDeque;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Poisson;
use serde::{Serialize, Serializer};
use uuid::Uuid;
use vigil_schemas::{Transaction, TransactionStatus};

use crate::amounts::{amount_for, ln1p, normal_amount};
use crate::scenario::{
    status_index, target_moments, tiers, Change, Incident, IncidentKind, OutlierTarget, Scenario, Scope, MINUTE_MS,
};
use crate::truth::{expectations, AmountExpectation, GroundTruth, IncidentTruth, OutlierTruth};

/// Namespace of the simulator's transaction ids (UUIDv5).
pub const ID_NAMESPACE: Uuid = Uuid::from_u128(0x5a1e_0c3d_7b8f_4e21_a9d4_1f6b_2c8e_9d70);

/// One generated transaction, serialised exactly as the producer's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimTransaction {
    pub transaction_id: Uuid,
    #[serde(serialize_with = "rfc3339_millis")]
    pub occurred_at: i64,
    pub status: TransactionStatus,
    pub auth_code: String,
    pub amount_minor: i64,
    pub currency: String,
    pub category: String,
    pub merchant_id: String,
}

fn rfc3339_millis<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&utc(*ms).to_rfc3339_opts(SecondsFormat::Millis, true))
}

pub fn utc(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl SimTransaction {
    /// The broker's form, as the producer would publish it (`received_at` = now).
    pub fn to_transaction(&self, received_at: i64) -> Transaction {
        Transaction {
            transaction_id: self.transaction_id.hyphenated().to_string(),
            occurred_at: self.occurred_at,
            status: self.status,
            auth_code: self.auth_code.clone(),
            amount_minor: self.amount_minor,
            currency: self.currency.clone(),
            category: self.category.clone(),
            merchant_id: self.merchant_id.clone(),
            received_at,
        }
    }
}

/// Rounds a start time down to its minute, so incidents line up with the detector's windows.
pub fn align_start(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis().div_euclid(MINUTE_MS) * MINUTE_MS
}

/// An outlier planned for one iteration.
#[derive(Debug, Clone)]
struct PlannedOutlier {
    at: i64,
    incident: usize,
    index: u32,
    category: usize,
    merchant: usize,
    amount: i64,
    id: Uuid,
}

pub struct Generator {
    scenario: Scenario,
    seed: u64,
    start_ms: i64,
    repeat: bool,
    rng: ChaCha8Rng,
    iteration: u32,
    /// Next minute (index within the iteration) to generate.
    minute: i64,
    seq: u64,
    buffer: VecDeque<SimTransaction>,
    outliers: VecDeque<PlannedOutlier>,
    truth: GroundTruth,
    categories: WeightedIndex<f64>,
    merchants: Vec<WeightedIndex<f64>>,
    codes: Vec<WeightedIndex<f64>>,
    run_key: String,
    generated: u64,
    withheld: u64,
}

impl Generator {
    /// A generator for one pass of `scenario` starting at `start` (rounded down to its minute).
    pub fn new(scenario: Scenario, seed: u64, start: DateTime<Utc>) -> Self {
        let start_ms = align_start(start);
        let categories =
            WeightedIndex::new(scenario.categories.iter().map(|c| c.weight)).unwrap_or_else(|_| unreachable_weights());
        let merchants = scenario
            .categories
            .iter()
            .map(|c| WeightedIndex::new(c.merchants.iter().map(|m| m.weight)).unwrap_or_else(|_| unreachable_weights()))
            .collect();
        let codes = TransactionStatus::ALL
            .iter()
            .map(|s| {
                WeightedIndex::new(scenario.codes(*s).iter().map(|c| c.1)).unwrap_or_else(|_| unreachable_weights())
            })
            .collect();
        let truth = GroundTruth {
            scenario: scenario.name.clone(),
            seed,
            start: utc(start_ms),
            end: utc(start_ms),
            iterations: 0,
            amount_tiers: tiers(),
            incidents: Vec::new(),
        };
        let run_key = format!("{}/{seed}/{start_ms}", scenario.name);
        let mut g = Generator {
            scenario,
            seed,
            start_ms,
            repeat: false,
            rng: ChaCha8Rng::seed_from_u64(seed),
            iteration: 0,
            minute: 0,
            seq: 0,
            buffer: VecDeque::new(),
            outliers: VecDeque::new(),
            truth,
            categories,
            merchants,
            codes,
            run_key,
            generated: 0,
            withheld: 0,
        };
        g.begin_iteration();
        g
    }

    /// Repeats the scenario forever, event time continuing (`--loop`).
    pub fn repeating(mut self, repeat: bool) -> Self {
        self.repeat = repeat;
        self
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The ground truth of every iteration begun so far.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// End of one pass (exclusive).
    pub fn end_of_first_pass_ms(&self) -> i64 {
        self.start_ms + self.scenario.duration_ms
    }

    /// Transactions generated so far, and those a volume drop withheld (a merchant gone dark,
    /// a category halved).
    pub fn counts(&self) -> (u64, u64) {
        (self.generated, self.withheld)
    }

    fn iteration_start(&self) -> i64 {
        self.start_ms + i64::from(self.iteration) * self.scenario.duration_ms
    }

    /// Plans the outliers of the current iteration and appends its incidents to the truth.
    fn begin_iteration(&mut self) {
        let it = self.iteration;
        let base = self.iteration_start();
        let s = &self.scenario;
        let mut plan_rng = ChaCha8Rng::seed_from_u64(self.seed);
        plan_rng.set_stream(1 + u64::from(it));
        let tiers = tiers();
        let mut planned = Vec::new();
        for (i, inc) in s.incidents.iter().enumerate() {
            let (dimension, value, expected, may_also, note) = expectations(&inc.kind, s);
            let mut outliers = Vec::new();
            if let IncidentKind::AmountOutlier { target, sigma, count } = &inc.kind {
                let (t_mean, t_sd) = target_moments(s, target).unwrap_or((0.0, 1.0));
                let x = t_mean + sigma * t_sd;
                let amount = amount_for(x);
                for j in 0..*count {
                    let at = base + inc.start_ms + (i64::from(j) * 2 + 1) * inc.duration_ms / (2 * i64::from(*count));
                    let (ci, mi) = match target {
                        OutlierTarget::Merchant(m) => position_of_merchant(s, m),
                        OutlierTarget::Category(c) => {
                            let ci = s.categories.iter().position(|k| &k.name == c).unwrap_or(0);
                            (ci, self.merchants[ci].sample(&mut plan_rng))
                        }
                    };
                    let cat = &s.categories[ci];
                    let m = &cat.merchants[mi];
                    let x = ln1p(amount);
                    let expect = |dimension: &str, value: &str, mean: f64, sd: f64| {
                        let z = (x - mean) / sd;
                        AmountExpectation {
                            dimension: dimension.into(),
                            value: value.into(),
                            z,
                            severity: tiers.emitted(z),
                            certain: tiers.certain(z),
                        }
                    };
                    let id = Uuid::new_v5(&ID_NAMESPACE, format!("{}/{it}/outlier/{i}/{j}", self.run_key).as_bytes());
                    outliers.push(OutlierTruth {
                        transaction_id: id.hyphenated().to_string(),
                        occurred_at: utc(at),
                        category: cat.name.clone(),
                        merchant_id: m.id.clone(),
                        amount_minor: amount,
                        expectations: vec![
                            expect("category", &cat.name, cat.ln_mean, cat.ln_sd),
                            expect("merchant", &m.id, m.ln_mean, m.ln_sd()),
                        ],
                    });
                    planned.push(PlannedOutlier { at, incident: i, index: j, category: ci, merchant: mi, amount, id });
                }
            }
            self.truth.incidents.push(IncidentTruth {
                id: format!("{it}.{i}"),
                iteration: it,
                name: inc.name.clone(),
                kind: inc.kind.as_str().into(),
                start: utc(base + inc.start_ms),
                end: utc(base + inc.end_ms()),
                dimension,
                value,
                expected,
                may_also,
                outliers,
                note,
            });
        }
        planned.sort_by_key(|p| (p.at, p.incident, p.index));
        self.outliers = planned.into();
        self.truth.iterations = it + 1;
        self.truth.end = utc(base + s.duration_ms);
    }

    /// Generates the next minute into the buffer; false when the run is over.
    fn fill(&mut self) -> bool {
        while self.buffer.is_empty() {
            if self.minute >= self.scenario.minutes() {
                if !self.repeat {
                    return false;
                }
                self.iteration += 1;
                self.minute = 0;
                self.begin_iteration();
            }
            self.generate_minute();
            self.minute += 1;
        }
        true
    }

    fn generate_minute(&mut self) {
        let base = self.iteration_start();
        let off = self.minute * MINUTE_MS;
        let slot = base + off;
        let daily = self.scenario.daily_cycle.map_or(1.0, |c| c.factor(slot + MINUTE_MS / 2, self.start_ms));
        // Cut the minute at every rate or volume incident boundary inside it.
        let mut cuts = vec![off, off + MINUTE_MS];
        for inc in &self.scenario.incidents {
            if matches!(
                inc.kind,
                IncidentKind::RateSpike { .. } | IncidentKind::AuthCodeSurge { .. } | IncidentKind::Volume { .. }
            ) {
                for b in [inc.start_ms, inc.end_ms()] {
                    if b > off && b < off + MINUTE_MS {
                        cuts.push(b);
                    }
                }
            }
        }
        cuts.sort_unstable();
        cuts.dedup();

        let mut events: Vec<(i64, TransactionStatus, Option<String>, Scope)> = Vec::new();
        for piece in cuts.windows(2) {
            let (a, b) = (piece[0], piece[1]);
            let total = self.scenario.events_per_minute * daily * (b - a) as f64 / MINUTE_MS as f64;
            for stream in streams(&self.scenario, a, total) {
                let n = poisson(&mut self.rng, stream.lambda);
                for _ in 0..n {
                    let t = base + a + self.rng.gen_range(0..(b - a));
                    events.push((t, stream.status, stream.code.clone(), stream.scope.clone()));
                }
            }
        }
        let mut minute: Vec<(i64, SimTransaction, Option<Uuid>)> = Vec::with_capacity(events.len());
        for (t, status, code, scope) in events {
            // A scoped stream's events belong to its category or merchant; the others are drawn
            // by weight (drawing nothing for a fixed scope keeps unscoped traffic unchanged).
            let (ci, mi) = match &scope {
                Scope::Global => {
                    let ci = self.categories.sample(&mut self.rng);
                    (ci, self.merchants[ci].sample(&mut self.rng))
                }
                Scope::Category(c) => {
                    let ci = self.scenario.categories.iter().position(|k| &k.name == c).unwrap_or(0);
                    (ci, self.merchants[ci].sample(&mut self.rng))
                }
                Scope::Merchant(m) => position_of_merchant(&self.scenario, m),
            };
            let code = match code {
                Some(c) => c,
                None => {
                    let k = self.codes[status_index(status)].sample(&mut self.rng);
                    self.scenario.codes(status)[k].0.clone()
                }
            };
            let cat = &self.scenario.categories[ci];
            let m = &cat.merchants[mi];
            let amount = normal_amount(&mut self.rng, m.ln_mean, m.ln_sigma);
            if !self.kept(ci, mi, t - base) {
                self.withheld += 1;
                continue;
            }
            let tx = self.transaction(t, status, code, amount, ci, mi);
            minute.push((t, tx, None));
        }
        while self.outliers.front().is_some_and(|o| o.at < slot + MINUTE_MS) {
            let Some(o) = self.outliers.pop_front() else { break };
            let tx = self.transaction(o.at, TransactionStatus::Approved, "00".into(), o.amount, o.category, o.merchant);
            minute.push((o.at, tx, Some(o.id)));
        }
        // Stable: equal times keep their generation order.
        minute.sort_by_key(|(t, _, _)| *t);
        for (_, mut tx, fixed_id) in minute {
            tx.transaction_id = match fixed_id {
                Some(id) => id,
                None => {
                    let key = format!("{}/{}/{}", self.run_key, self.iteration, self.seq);
                    self.seq += 1;
                    Uuid::new_v5(&ID_NAMESPACE, key.as_bytes())
                }
            };
            self.generated += 1;
            self.buffer.push_back(tx);
        }
    }

    /// Whether an event of merchant `mi` of category `ci` at `offset` survives the scoped volume
    /// drops covering it: each keeps it with probability `factor` (a stop, factor 0, withholds
    /// it without a draw, so a merchant going dark leaves the rest of the traffic as it was).
    /// Drops in all traffic are applied to the streams' volume instead, see [`streams`].
    fn kept(&mut self, ci: usize, mi: usize, offset: i64) -> bool {
        let cat = &self.scenario.categories[ci];
        let keep: f64 = self
            .scenario
            .incidents
            .iter()
            .filter(|inc| inc.covers(offset))
            .filter_map(|inc| match &inc.kind {
                IncidentKind::Volume { factor, scope: Scope::Category(c) } if *factor < 1.0 && *c == cat.name => {
                    Some(*factor)
                }
                IncidentKind::Volume { factor, scope: Scope::Merchant(m) }
                    if *factor < 1.0 && *m == cat.merchants[mi].id =>
                {
                    Some(*factor)
                }
                _ => None,
            })
            .product();
        if keep >= 1.0 {
            true
        } else if keep <= 0.0 {
            false
        } else {
            self.rng.gen::<f64>() < keep
        }
    }

    fn transaction(
        &self,
        t: i64,
        status: TransactionStatus,
        auth_code: String,
        amount: i64,
        ci: usize,
        mi: usize,
    ) -> SimTransaction {
        let cat = &self.scenario.categories[ci];
        SimTransaction {
            transaction_id: Uuid::nil(),
            occurred_at: t,
            status,
            auth_code,
            amount_minor: amount,
            currency: cat.currency.clone(),
            category: cat.name.clone(),
            merchant_id: cat.merchants[mi].id.clone(),
        }
    }
}

impl Iterator for Generator {
    type Item = SimTransaction;

    fn next(&mut self) -> Option<SimTransaction> {
        if !self.fill() {
            return None;
        }
        self.buffer.pop_front()
    }
}

fn unreachable_weights() -> WeightedIndex<f64> {
    // A checked scenario always has positive weights; keep a valid index rather than panic.
    WeightedIndex::new([1.0]).unwrap_or_else(|_| unreachable!("a single positive weight is valid"))
}

fn position_of_merchant(s: &Scenario, id: &str) -> (usize, usize) {
    for (ci, c) in s.categories.iter().enumerate() {
        if let Some(mi) = c.merchants.iter().position(|m| m.id == id) {
            return (ci, mi);
        }
    }
    (0, 0)
}

fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 0;
    }
    match Poisson::new(lambda) {
        Ok(p) => {
            let x: f64 = p.sample(rng);
            x.max(0.0) as u64
        }
        Err(_) => 0,
    }
}

/// One Poisson stream of a piece of a minute.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub status: TransactionStatus,
    /// Every event of the stream has this auth code (a surge), else drawn from the status's mix.
    pub code: Option<String>,
    /// Every event of the stream belongs to this scope, else category and merchant are drawn by
    /// weight.
    pub scope: Scope,
    /// Expected number of events.
    pub lambda: f64,
}

/// The share of all traffic a scope carries.
pub fn scope_weight(s: &Scenario, scope: &Scope) -> f64 {
    match scope {
        Scope::Global => 1.0,
        Scope::Category(c) => s.category(c).map_or(0.0, |c| c.weight),
        Scope::Merchant(m) => s.merchant(m).map_or(0.0, |(c, m)| c.weight * m.weight),
    }
}

/// The expected counts of every stream in a piece of a minute starting at offset `a` with
/// `total` expected baseline transactions.
///
/// A spike's extra events are added to its status (the other statuses keep their volume); a
/// target rate means extra events until the status is that share of all transactions. A surge
/// adds events with its code (and status) the same way, on top of any global spike. A scoped
/// spike or surge adds its events to its category or merchant only, computed from that scope's
/// normal traffic (its share of `total`, with the scenario's status mix), and a target rate is
/// then a share of the scope's transactions.
///
/// A volume incident in all traffic multiplies `total` (and so every stream, spikes included)
/// by its factor. A scoped surge adds a stream per status, (factor − 1) × the scope's normal
/// traffic with the scenario's status mix; a scoped drop withholds events as they are drawn
/// (see `Generator::kept`), not here.
pub fn streams(s: &Scenario, a: i64, total: f64) -> Vec<Stream> {
    let covering = || s.incidents.iter().filter(|i| i.covers(a));
    let total = total
        * covering()
            .filter_map(|i| match &i.kind {
                IncidentKind::Volume { factor, scope: Scope::Global } => Some(*factor),
                _ => None,
            })
            .product::<f64>();
    let mut lambda: [f64; 4] = std::array::from_fn(|i| total * s.status_mix[i]);
    let base = lambda;
    let mut scoped = Vec::new();
    for inc in s.incidents.iter().filter(|i| i.covers(a)) {
        if let IncidentKind::RateSpike { status, change, scope } = &inc.kind {
            let k = status_index(*status);
            let w = scope_weight(s, scope);
            let extra = match *change {
                Change::Multiplier(m) => (m - 1.0) * base[k] * w,
                Change::TargetRate(r) => ((r * total * w - base[k] * w) / (1.0 - r)).max(0.0),
            };
            match scope {
                Scope::Global => lambda[k] += extra,
                _ => scoped.push(Stream { status: *status, code: None, scope: scope.clone(), lambda: extra }),
            }
        }
    }
    let mut out: Vec<Stream> = TransactionStatus::ALL
        .iter()
        .map(|st| Stream { status: *st, code: None, scope: Scope::Global, lambda: lambda[status_index(*st)] })
        .collect();
    let after_spikes: f64 = lambda.iter().sum();
    for inc in s.incidents.iter().filter(|i| i.covers(a)) {
        if let IncidentKind::AuthCodeSurge { code, status, change, scope } = &inc.kind {
            let share = s.codes(*status).iter().find(|(c, _)| c == code).map_or(0.0, |c| c.1);
            let (normal, all) = match scope {
                Scope::Global => (lambda[status_index(*status)] * share, after_spikes),
                _ => {
                    let w = scope_weight(s, scope);
                    (base[status_index(*status)] * share * w, total * w)
                }
            };
            let extra = match *change {
                Change::Multiplier(m) => (m - 1.0) * normal,
                Change::TargetRate(r) => ((r * all - normal) / (1.0 - r)).max(0.0),
            };
            out.push(Stream { status: *status, code: Some(code.clone()), scope: scope.clone(), lambda: extra });
        }
    }
    out.extend(scoped);
    for inc in covering() {
        if let IncidentKind::Volume { factor, scope } = &inc.kind {
            if *factor > 1.0 && *scope != Scope::Global {
                let extra = (factor - 1.0) * total * scope_weight(s, scope);
                out.extend(TransactionStatus::ALL.iter().map(|st| Stream {
                    status: *st,
                    code: None,
                    scope: scope.clone(),
                    lambda: extra * s.status_share(*st),
                }));
            }
        }
    }
    out
}

/// Incidents of `s` with their absolute span for a run starting at `start_ms`.
pub fn spans(s: &Scenario, start_ms: i64) -> Vec<(&Incident, i64, i64)> {
    s.incidents.iter().map(|i| (i, start_ms + i.start_ms, start_ms + i.end_ms())).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::scenario::DailyCycle;
    use crate::truth::RuleRef;

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z").map(|t| t.with_timezone(&Utc)).unwrap()
    }

    fn flat(epm: f64, minutes: i64, incidents: &str) -> Scenario {
        Scenario::from_toml(&format!(
            r#"
name = "flat"
duration = "{minutes}m"
events_per_minute = {epm}
[status_mix]
approved = 0.90
denied = 0.06
failed = 0.03
reversed = 0.01
[auth_codes]
denied = {{ "05" = 0.5, "51" = 0.5 }}
[[categories]]
name = "food"
weight = 2
ln_mean = 7.0
ln_sigma = 0.5
merchants = [{{ id = "m-1", weight = 3 }}, {{ id = "m-2", multiplier = 0.8 }}]
[[categories]]
name = "travel"
ln_mean = 9.0
ln_sigma = 0.8
merchants = [{{ id = "m-3" }}]
{incidents}
"#
        ))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_same_seed_gives_the_same_transactions_and_another_seed_others() {
        let s = Scenario::builtin("mixed").unwrap();
        let a: Vec<SimTransaction> = Generator::new(s.clone(), 7, start()).take(5000).collect();
        let b: Vec<SimTransaction> = Generator::new(s.clone(), 7, start()).take(5000).collect();
        let c: Vec<SimTransaction> = Generator::new(s, 8, start()).take(5000).collect();
        assert_eq!(a.len(), 5000);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn transactions_come_in_event_time_order_within_the_run_with_unique_ids() {
        let g = Generator::new(Scenario::builtin("mixed").unwrap(), 3, start());
        let (from, to) = (g.start_ms(), g.end_of_first_pass_ms());
        let all: Vec<SimTransaction> = g.collect();
        assert!(all.windows(2).all(|w| w[0].occurred_at <= w[1].occurred_at));
        assert!(all.iter().all(|t| t.occurred_at >= from && t.occurred_at < to));
        let ids: std::collections::HashSet<Uuid> = all.iter().map(|t| t.transaction_id).collect();
        assert_eq!(ids.len(), all.len());
    }

    #[test]
    fn volume_and_status_mix_match_the_scenario() {
        let s = flat(200.0, 120, "");
        let all: Vec<SimTransaction> = Generator::new(s, 1, start()).collect();
        let n = all.len() as f64;
        let expected = 200.0 * 120.0;
        assert!((n - expected).abs() < 4.0 * expected.sqrt(), "{n} transactions, expected {expected}");
        let mut by_status: BTreeMap<TransactionStatus, f64> = BTreeMap::new();
        for t in &all {
            *by_status.entry(t.status).or_default() += 1.0;
        }
        for (st, share) in [
            (TransactionStatus::Approved, 0.90),
            (TransactionStatus::Denied, 0.06),
            (TransactionStatus::Failed, 0.03),
            (TransactionStatus::Reversed, 0.01),
        ] {
            let got = by_status.get(&st).copied().unwrap_or(0.0) / n;
            let sd = (share * (1.0 - share) / n).sqrt();
            assert!((got - share).abs() < 4.0 * sd, "{st}: {got:.4} vs {share}");
        }
        // Auth codes follow their status's mix; categories and merchants their weights.
        let denied: Vec<&SimTransaction> = all.iter().filter(|t| t.status == TransactionStatus::Denied).collect();
        let c51 = denied.iter().filter(|t| t.auth_code == "51").count() as f64 / denied.len() as f64;
        assert!((c51 - 0.5).abs() < 0.05, "{c51}");
        assert!(all.iter().filter(|t| t.status == TransactionStatus::Approved).all(|t| t.auth_code == "00"));
        let food = all.iter().filter(|t| t.category == "food").count() as f64 / n;
        assert!((food - 2.0 / 3.0).abs() < 0.02, "{food}");
        let m1 = all.iter().filter(|t| t.merchant_id == "m-1").count() as f64 / n;
        assert!((m1 - 0.5).abs() < 0.02, "{m1}");
    }

    #[test]
    fn the_daily_cycle_shapes_hourly_volume() {
        let mut s = flat(60.0, 24 * 60, "");
        s.daily_cycle = Some(DailyCycle { amplitude: 0.6, peak_hour: 14.0, weekend_factor: 1.0, trend_per_day: 0.0 });
        let mut per_hour = [0f64; 24];
        for t in Generator::new(s, 5, start()) {
            per_hour[(t.occurred_at.rem_euclid(86_400_000) / 3_600_000) as usize] += 1.0;
        }
        let busiest = (0..24).max_by(|a, b| per_hour[*a].total_cmp(&per_hour[*b])).unwrap();
        let quietest = (0..24).min_by(|a, b| per_hour[*a].total_cmp(&per_hour[*b])).unwrap();
        assert!((13..=15).contains(&busiest), "busiest hour {busiest}: {per_hour:?}");
        assert!((1..=3).contains(&quietest), "quietest hour {quietest}: {per_hour:?}");
        // Peak/trough ≈ 1.6/0.4 (hour averages of the cosine flatten it a little).
        let ratio = per_hour[14] / per_hour[2];
        assert!((3.2..=4.8).contains(&ratio), "peak/trough {ratio}");
        let total: f64 = per_hour.iter().sum();
        assert!((total - 60.0 * 1440.0).abs() < 4.0 * (60.0f64 * 1440.0).sqrt(), "the day's total is unchanged");
    }

    #[test]
    fn a_rate_spike_reaches_its_target_share_inside_its_span_only() {
        let s = flat(
            300.0,
            40,
            r#"
[[incidents]]
kind = "rate_spike"
status = "failed"
start = "20m"
duration = "10m"
target_rate = 0.30
"#,
        );
        let g = Generator::new(s, 9, start());
        let (s0, s1) = (g.start_ms() + 20 * MINUTE_MS, g.start_ms() + 30 * MINUTE_MS);
        let all: Vec<SimTransaction> = g.collect();
        let share = |inside: bool| {
            let xs: Vec<&SimTransaction> =
                all.iter().filter(|t| (t.occurred_at >= s0 && t.occurred_at < s1) == inside).collect();
            xs.iter().filter(|t| t.status == TransactionStatus::Failed).count() as f64 / xs.len() as f64
        };
        assert!((share(true) - 0.30).abs() < 0.02, "inside {}", share(true));
        assert!((share(false) - 0.03).abs() < 0.01, "outside {}", share(false));
    }

    #[test]
    fn an_auth_code_surge_and_a_dark_merchant_shape_their_spans() {
        let s = flat(
            300.0,
            30,
            r#"
[[incidents]]
kind = "auth_code_surge"
code = "51"
start = "10m"
duration = "5m"
multiplier = 6

[[incidents]]
kind = "merchant_dark"
merchant = "m-3"
start = "750s"
duration = "10m"
"#,
        );
        let g = Generator::new(s, 4, start());
        let t0 = g.start_ms();
        let all: Vec<SimTransaction> = g.collect();
        let in_span = |t: &SimTransaction, a: i64, b: i64| t.occurred_at >= t0 + a && t.occurred_at < t0 + b;
        let count51 = |a, b| all.iter().filter(|t| in_span(t, a, b) && t.auth_code == "51").count() as f64;
        let (during, before) = (count51(10 * MINUTE_MS, 15 * MINUTE_MS), count51(0, 10 * MINUTE_MS) / 2.0);
        assert!((during / before - 6.0).abs() < 1.5, "51 during {during}, before (per 5 min) {before}");
        assert!(all.iter().filter(|t| t.auth_code == "51").all(|t| t.status == TransactionStatus::Denied));
        let dark = all.iter().filter(|t| t.merchant_id == "m-3" && in_span(t, 750_000, 1_350_000)).count();
        assert_eq!(dark, 0, "m-3 sent during its dark span");
        assert!(all.iter().any(|t| t.merchant_id == "m-3" && in_span(t, 1_350_000, 1_800_000)));
    }

    #[test]
    fn a_merchant_scoped_spike_changes_only_that_merchants_rate_and_names_it_in_the_truth() {
        let s = flat(
            600.0,
            40,
            r#"
[[incidents]]
kind = "rate_spike"
status = "denied"
merchant = "m-2"
start = "20m"
duration = "20m"
target_rate = 0.30
"#,
        );
        let g = Generator::new(s, 11, start());
        let (s0, truth) = (g.start_ms() + 20 * MINUTE_MS, g.truth().clone());
        let all: Vec<SimTransaction> = g.collect();
        let denied_share = |merchant: &str, inside: bool| {
            let xs: Vec<&SimTransaction> =
                all.iter().filter(|t| t.merchant_id == merchant && (t.occurred_at >= s0) == inside).collect();
            xs.iter().filter(|t| t.status == TransactionStatus::Denied).count() as f64 / xs.len() as f64
        };
        // m-2 carries 1/4 of food (2/3 of traffic): about 100 a minute, 2 000 in the span.
        assert!((denied_share("m-2", true) - 0.30).abs() < 0.03, "m-2 inside {}", denied_share("m-2", true));
        assert!((denied_share("m-2", false) - 0.06).abs() < 0.02, "m-2 before {}", denied_share("m-2", false));
        for other in ["m-1", "m-3"] {
            assert!((denied_share(other, true) - 0.06).abs() < 0.02, "{other} inside {}", denied_share(other, true));
        }
        let inc = &truth.incidents[0];
        assert_eq!((inc.dimension.as_str(), inc.value.as_str()), ("merchant", "m-2"));
        assert_eq!(inc.expected, vec![RuleRef::new("denied_rate", "merchant", "m-2")]);
        for wider in [RuleRef::new("denied_rate", "category", "food"), RuleRef::new("denied_rate", "global", "all")] {
            assert!(inc.may_also.contains(&wider), "{wider} not in {:?}", inc.may_also);
        }
        assert!(
            !inc.may_also.iter().any(|r| r.rule == "denied_rate" && r.dimension == "merchant"),
            "{:?}",
            inc.may_also
        );
        assert!(inc.may_also.contains(&RuleRef::new("volume_surge", "merchant", "m-2")), "{:?}", inc.may_also);
    }

    #[test]
    fn volume_incidents_multiply_their_scopes_transactions_per_minute_and_leave_the_rest_alone() {
        // food (m-1, m-2) carries 400 a minute, travel (m-3 alone) 200.
        let s = flat(
            600.0,
            40,
            r#"
[[incidents]]
kind = "volume"
factor = 0.5
category = "food"
start = "10m"
duration = "10m"

[[incidents]]
kind = "volume"
factor = 3
merchant = "m-3"
start = "10m"
duration = "10m"

[[incidents]]
kind = "volume"
factor = 0
start = "25m"
duration = "5m"

[[incidents]]
kind = "volume"
factor = 2
start = "30m"
duration = "5m"
"#,
        );
        let mut g = Generator::new(s, 21, start());
        let (t0, truth) = (g.start_ms(), g.truth().clone());
        let all: Vec<SimTransaction> = g.by_ref().collect();
        let per_minute = |keep: &dyn Fn(&SimTransaction) -> bool, from: i64, to: i64| {
            let n = all
                .iter()
                .filter(|t| t.occurred_at >= t0 + from * MINUTE_MS && t.occurred_at < t0 + to * MINUTE_MS && keep(t))
                .count();
            n as f64 / (to - from) as f64
        };
        let food = |t: &SimTransaction| t.category == "food";
        let travel = |t: &SimTransaction| t.category == "travel";
        let any = |_: &SimTransaction| true;
        let (before, during, after) = (per_minute(&food, 0, 10), per_minute(&food, 10, 20), per_minute(&food, 20, 25));
        assert!((during / before - 0.5).abs() < 0.05, "food {before}/min before, {during}/min during");
        assert!((after / before - 1.0).abs() < 0.1, "food {after}/min after");
        let (before, during) = (per_minute(&travel, 0, 10), per_minute(&travel, 10, 20));
        assert!((during / before - 3.0).abs() < 0.2, "m-3 {before}/min before, {during}/min during");
        // The surge has the normal status mix.
        let denied = |t: &SimTransaction| t.category == "travel" && t.status == TransactionStatus::Denied;
        let share = per_minute(&denied, 10, 20) / during;
        assert!((share - 0.06).abs() < 0.015, "m-3's denied share in its surge {share}");
        assert_eq!(per_minute(&any, 25, 30), 0.0, "a stop in all traffic sends nothing");
        let surge = per_minute(&any, 30, 35);
        assert!((surge / 1200.0 - 1.0).abs() < 0.06, "{surge}/min in the global surge");
        // The halved category's withheld transactions are counted (the global stop draws none).
        let withheld = g.counts().1 as f64;
        assert!((withheld - 2000.0).abs() < 200.0, "{withheld} withheld");

        let expected: Vec<&RuleRef> = truth.incidents.iter().map(|i| &i.expected[0]).collect();
        assert_eq!(
            expected,
            [
                &RuleRef::new("volume_drop", "category", "food"),
                &RuleRef::new("volume_surge", "merchant", "m-3"),
                &RuleRef::new("volume_drop", "global", "all"),
                &RuleRef::new("volume_surge", "global", "all"),
            ]
        );
        let food = &truth.incidents[0];
        assert_eq!((food.kind.as_str(), food.dimension.as_str(), food.value.as_str()), ("volume", "category", "food"));
        for r in [
            RuleRef::new("volume_drop", "global", "all"),
            RuleRef::new("volume_drop", "merchant", "m-1"),
            RuleRef::new("volume_drop", "merchant", "m-2"),
        ] {
            assert!(food.may_also.contains(&r), "{r} not in {:?}", food.may_also);
        }
        assert!(truth.incidents[1].may_also.contains(&RuleRef::new("volume_surge", "category", "travel")));
        assert_eq!(truth.incidents[2].name, "traffic stops");
        assert_eq!(truth.incidents[3].name, "traffic ×2");
    }

    #[test]
    fn a_category_scoped_surge_multiplies_its_codes_count_in_that_category_only() {
        let s = flat(
            600.0,
            30,
            r#"
[[incidents]]
kind = "auth_code_surge"
code = "51"
category = "travel"
start = "10m"
duration = "20m"
multiplier = 4
"#,
        );
        let g = Generator::new(s, 12, start());
        let (s0, truth) = (g.start_ms() + 10 * MINUTE_MS, g.truth().clone());
        let all: Vec<SimTransaction> = g.collect();
        // Code 51 per minute, before (10 minutes) and during (20 minutes), per category.
        let per_minute = |cat: &str, inside: bool| {
            let n = all
                .iter()
                .filter(|t| t.category == cat && t.auth_code == "51" && (t.occurred_at >= s0) == inside)
                .count() as f64;
            n / if inside { 20.0 } else { 10.0 }
        };
        // travel: 200 a minute, 1.5 % code 51 = 3 a minute normally, 12 during the surge.
        let (before, during) = (per_minute("travel", false), per_minute("travel", true));
        assert!((during / before - 4.0).abs() < 1.3, "travel 51: {before}/min before, {during}/min during");
        let (before, during) = (per_minute("food", false), per_minute("food", true));
        assert!((during / before - 1.0).abs() < 0.35, "food 51: {before}/min before, {during}/min during");
        let inc = &truth.incidents[0];
        assert_eq!((inc.dimension.as_str(), inc.value.as_str()), ("category", "travel"));
        assert_eq!(inc.expected, vec![RuleRef::new("denied_rate", "category", "travel")]);
        assert!(inc.may_also.contains(&RuleRef::new("auth_code_rate", "auth_code", "51")), "{:?}", inc.may_also);
    }

    #[test]
    fn an_unscoped_scenario_draws_the_same_traffic_as_before_scopes_existed() {
        // Scoped streams come after every unscoped one and draw no category for a fixed scope,
        // so the built-in scenarios' traffic (which the end-to-end tests' seeds rely on) is
        // unchanged: a digest of every transaction of `mixed` seed 1 (spikes, a surge and a
        // dark merchant included), computed with the generator before scopes were added. The
        // amounts changed when the normal amounts' clip moved from ±2.5σ to ±1.8σ; the rest did
        // not (`without_amounts` is the same with either clip).
        let (mut h, mut without_amounts): (u64, u64) = (0, 0);
        for t in Generator::new(Scenario::builtin("mixed").unwrap(), 1, start()) {
            let rest =
                t.occurred_at as u64 ^ (t.merchant_id.len() as u64) << 7 ^ u64::from(t.auth_code.as_bytes()[1]) << 13;
            h = h.wrapping_mul(1_000_003).wrapping_add(rest ^ t.amount_minor as u64);
            without_amounts = without_amounts.wrapping_mul(1_000_003).wrapping_add(rest);
        }
        assert_eq!(without_amounts, 3_736_350_073_471_459_622);
        assert_eq!(h, 15_089_984_268_774_153_186);
    }

    #[test]
    fn outliers_land_at_the_requested_sigma_with_the_expected_tier() {
        let s = flat(
            100.0,
            60,
            r#"
[[incidents]]
kind = "amount_outlier"
merchant = "m-3"
sigma = 4
count = 3
start = "40m"
duration = "6m"

[[incidents]]
kind = "amount_outlier"
category = "food"
sigma = 8
start = "50m"
"#,
        );
        let g = Generator::new(s.clone(), 2, start());
        let truth = g.truth().clone();
        let all: Vec<SimTransaction> = g.collect();
        let outliers: Vec<&OutlierTruth> = truth.incidents.iter().flat_map(|i| &i.outliers).collect();
        assert_eq!(outliers.len(), 4);
        for o in &outliers {
            let tx = all.iter().find(|t| t.transaction_id.to_string() == o.transaction_id).expect("outlier sent");
            assert_eq!(tx.amount_minor, o.amount_minor);
            assert_eq!(tx.occurred_at, o.occurred_at.timestamp_millis());
            assert_eq!((tx.status, tx.auth_code.as_str()), (TransactionStatus::Approved, "00"));
        }
        // 3 at 4σ of m-3 (m-3 is its category's only merchant: both baselines agree), 1 at 8σ of food.
        let m3 = s.merchant("m-3").unwrap().1;
        for o in &outliers[..3] {
            let z = (ln1p(o.amount_minor) - m3.ln_mean) / m3.ln_sd();
            assert!((z - 4.0).abs() < 1e-3, "z {z}");
            for e in &o.expectations {
                assert_eq!(e.severity, Some(vigil_schemas::Severity::High), "{e:?}");
                assert!(e.certain && (e.z - 4.0).abs() < 1e-3);
            }
        }
        let food = s.category("food").unwrap();
        let cat = &outliers[3].expectations[0];
        assert_eq!(cat.dimension, "category");
        assert!(((ln1p(outliers[3].amount_minor) - food.ln_mean) / food.ln_sd - 8.0).abs() < 1e-3);
        assert_eq!(cat.severity, Some(vigil_schemas::Severity::Critical));
        // Evenly spread: 41m, 43m, 45m.
        let t0 = truth.start.timestamp_millis();
        let at: Vec<i64> = outliers[..3].iter().map(|o| (o.occurred_at.timestamp_millis() - t0) / 60_000).collect();
        assert_eq!(at, vec![41, 43, 45]);
    }

    #[test]
    fn the_amount_outliers_scenario_predicts_every_tier_with_confidence() {
        let g = Generator::new(Scenario::builtin("amount-outliers").unwrap(), 1, start());
        let outliers: Vec<&OutlierTruth> = g.truth().incidents.iter().flat_map(|i| &i.outliers).collect();
        assert_eq!(outliers.len(), 6);
        for o in outliers {
            for e in &o.expectations {
                assert!(e.certain, "{} {}: z {} is too near a tier boundary", o.merchant_id, e.dimension, e.z);
                assert!(e.severity.is_some(), "{} {}: z {} emits nothing", o.merchant_id, e.dimension, e.z);
            }
        }
    }

    #[test]
    fn the_ground_truth_spans_and_rules_follow_the_incidents_and_the_loop() {
        let s = Scenario::builtin("seed-validation").unwrap();
        let mut g = Generator::new(s.clone(), 1, start()).repeating(true);
        let t0 = start().timestamp_millis();
        let truth = g.truth().clone();
        assert_eq!(truth.start, start());
        assert_eq!(truth.end, utc(t0 + s.duration_ms));
        assert_eq!(truth.incidents.len(), s.incidents.len());
        for (inc, it) in s.incidents.iter().zip(&truth.incidents) {
            assert_eq!(it.start, utc(t0 + inc.start_ms));
            assert_eq!(it.end, utc(t0 + inc.end_ms()));
            assert_eq!(it.expected.len(), 1, "{it:?}");
        }
        let rules: Vec<String> = truth.incidents.iter().map(|i| i.expected[0].rule.clone()).collect();
        assert_eq!(rules, ["denied_rate", "failed_rate", "reversed_rate"]);
        // Past the first pass the loop begins a second iteration, one duration later.
        let n = g.by_ref().take_while(|t| t.occurred_at < t0 + s.duration_ms + 60_000).count();
        assert!(n > 0);
        let truth = g.truth();
        assert_eq!(truth.iterations, 2);
        assert_eq!(truth.incidents.len(), 2 * s.incidents.len());
        assert_eq!(truth.incidents[3].start, utc(t0 + s.duration_ms + s.incidents[0].start_ms));
        assert_eq!(truth.end, utc(t0 + 2 * s.duration_ms));
    }

    #[test]
    fn every_generated_transaction_passes_the_producers_validation() {
        let rules = vigil_producer::validation::Rules {
            max_amount_minor: crate::scenario::MAX_AMOUNT_MINOR,
            max_future_skew: std::time::Duration::from_secs(300),
            max_event_age: std::time::Duration::from_secs(30 * 86_400),
        };
        for (name, _) in crate::scenario::BUILTIN {
            let g = Generator::new(Scenario::builtin(name).unwrap(), 1, start());
            let end = utc(g.end_of_first_pass_ms());
            for tx in g.take(20_000) {
                let v = serde_json::to_value(&tx).unwrap();
                let back = vigil_producer::validation::validate(&v, &rules, end, None)
                    .unwrap_or_else(|e| panic!("{name}: {v} refused: {e:?}"));
                assert_eq!(back.transaction_id, tx.transaction_id.to_string());
                assert_eq!(back.occurred_at, tx.occurred_at);
            }
        }
    }
}
