//! The incident catalogue: the simulator's `busy-day` scenario (about 50 transactions a minute
//! at night, 300 at the peak) with one incident at a time, on every combination of the axes
//! below, each over several seeds; and normal days of the same scenario for false alarms.
//!
//! Two parts: the rate incidents (issue 16: a status's or an auth code's rate × 1.5 to 6) and
//! the volume incidents (issue 17: transactions per minute × 0, 0.5, 2 or 3), scored apart so
//! the rate figures stay comparable with the runs before volume incidents existed.
//!
//! Every case is a scenario built from TOML text and checked by the simulator like any file,
//! so the catalogue cannot ask for an incident the simulator would refuse.

use serde::Serialize;
use vigil_simulator::scenario::MINUTE_MS;
use vigil_simulator::Scenario;

/// The scenario every case starts from.
pub const BASE_SCENARIO: &str = "busy-day";
/// The merchant and the category scoped incidents happen in (20 % and 30 % of all traffic).
pub const MERCHANT: &str = "m-market-1";
pub const CATEGORY: &str = "food";
/// The auth code whose share the `auth_code` incidents multiply (a denial code: 40 % of
/// denials, 2.4 % of all transactions).
pub const AUTH_CODE: &str = "51";

/// Normal minutes before an incident: every rule's baseline is full by then (the sequential
/// rule's 120 minutes plus its 15-minute quarantine; the per-minute rule's and the view's 30),
/// so an incident meets the rules in their steady state, as in production (with 60 minutes the
/// sequential rule, its baseline still filling, detected fewer of the target incidents).
pub const WARM_UP_MINUTES: i64 = 150;
/// Normal minutes after an incident, for the anomaly to resolve.
pub const TAIL_MINUTES: i64 = 30;

/// What an incident changes. An open set: each kind says how it is written into the scenario
/// ([`Kind::incident_toml`]); the grader scores whatever anomalies the ground truth expects,
/// with the same columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The denied rate × strength.
    Denied,
    /// The failed rate × strength.
    Failed,
    /// The reversed rate × strength.
    Reversed,
    /// The share of auth code [`AUTH_CODE`] × strength.
    AuthCode,
    /// Transactions per minute in the scope × strength, every status alike (issue 17): 0 stops
    /// them, 0.5 halves them, 2 doubles them.
    Volume,
}

impl Kind {
    /// The rate kinds (issue 16).
    pub const RATES: [Kind; 4] = [Kind::Denied, Kind::Failed, Kind::Reversed, Kind::AuthCode];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Denied => "denied",
            Kind::Failed => "failed",
            Kind::Reversed => "reversed",
            Kind::AuthCode => "auth_code",
            Kind::Volume => "volume",
        }
    }

    /// The part of the catalogue the kind belongs to.
    pub fn part(self) -> Part {
        match self {
            Kind::Volume => Part::Volume,
            _ => Part::Rate,
        }
    }

    /// The incident's TOML (without `start` and `duration`). Rates are multiplied exactly: the
    /// target rate is `strength` × the normal share (of the scope's traffic, which has the
    /// scenario's status mix). Volume is multiplied by the simulator (`factor`).
    pub fn incident_toml(self, strength: f64, scope: Scope, s: &Scenario) -> String {
        let scope_line = match scope {
            Scope::Global => String::new(),
            Scope::Merchant => format!("merchant = \"{MERCHANT}\"\n"),
            Scope::Category => format!("category = \"{CATEGORY}\"\n"),
        };
        let (head, normal) = match self {
            Kind::Denied | Kind::Failed | Kind::Reversed => {
                let status = vigil_schemas::TransactionStatus::parse(self.as_str())
                    .unwrap_or(vigil_schemas::TransactionStatus::Denied);
                (format!("kind = \"rate_spike\"\nstatus = \"{}\"\n", self.as_str()), s.status_share(status))
            }
            Kind::AuthCode => {
                let status = vigil_schemas::TransactionStatus::Denied;
                let share = s.codes(status).iter().find(|(c, _)| c == AUTH_CODE).map_or(0.0, |c| c.1);
                (format!("kind = \"auth_code_surge\"\ncode = \"{AUTH_CODE}\"\n"), s.status_share(status) * share)
            }
            Kind::Volume => return format!("kind = \"volume\"\n{scope_line}factor = {strength}\n"),
        };
        format!("{head}{scope_line}target_rate = {}\n", strength * normal)
    }
}

/// Where the incident happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Global,
    /// [`MERCHANT`] only.
    Merchant,
    /// [`CATEGORY`] only.
    Category,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Global, Scope::Merchant, Scope::Category];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Merchant => "merchant",
            Scope::Category => "category",
        }
    }

    /// The scope's share of all traffic in the scenario.
    pub fn weight(self, s: &Scenario) -> f64 {
        match self {
            Scope::Global => 1.0,
            Scope::Merchant => s.merchant(MERCHANT).map_or(0.0, |(c, m)| c.weight * m.weight),
            Scope::Category => s.category(CATEGORY).map_or(0.0, |c| c.weight),
        }
    }
}

/// The time of day an incident happens at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Volume {
    /// Centred on 01:00 UTC: about 50 transactions a minute in all.
    Night,
    /// Centred on 13:00 UTC: about 300 a minute.
    Peak,
}

impl Volume {
    pub const ALL: [Volume; 2] = [Volume::Night, Volume::Peak];

    pub fn as_str(self) -> &'static str {
        match self {
            Volume::Night => "night",
            Volume::Peak => "peak",
        }
    }

    pub fn hour(self) -> i64 {
        match self {
            Volume::Night => 1,
            Volume::Peak => 13,
        }
    }
}

/// The rate incidents' factors.
pub const STRENGTHS: [f64; 4] = [1.5, 2.0, 3.0, 6.0];
/// The volume incidents' factors: a stop, a halving, a doubling.
pub const VOLUME_FACTORS: [f64; 4] = [0.0, 0.5, 2.0, 3.0];
pub const DURATIONS: [i64; 3] = [3, 10, 60];

/// A part of the catalogue, scored and reported on its own (`--only`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Rate incidents (issue 16), scored on the rate rules' anomalies.
    Rate,
    /// Volume incidents (issue 17), scored on the volume rules' anomalies.
    Volume,
}

impl Part {
    pub const ALL: [Part; 2] = [Part::Rate, Part::Volume];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Rate => "rate",
            Part::Volume => "volume",
        }
    }

    pub fn parse(s: &str) -> Option<Part> {
        Part::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The part an anomaly rule belongs to: the volume rules, or the rate rules (every other
    /// rule the grader sees: the amount rules are never scored).
    pub fn of_rule(rule: &str) -> Part {
        match rule {
            "volume_drop" | "volume_surge" => Part::Volume,
            _ => Part::Rate,
        }
    }
}

/// One cell of the catalogue: the axes of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cell {
    pub kind: Kind,
    /// The factor the rate (or the code's share, or the volume) is multiplied by.
    pub strength: f64,
    /// Minutes.
    pub duration: i64,
    pub volume: Volume,
    pub scope: Scope,
}

impl Cell {
    /// Every rate cell (4 kinds × 4 strengths × 3 durations × 2 times × 3 scopes = 288), then
    /// every volume cell (4 factors × 3 durations × 2 times × 3 scopes = 72).
    pub fn all() -> Vec<Cell> {
        Cell::of(&Part::ALL)
    }

    /// The cells of some parts of the catalogue, in the order of [`Cell::all`].
    pub fn of(parts: &[Part]) -> Vec<Cell> {
        let mut out = Vec::new();
        for part in Part::ALL.into_iter().filter(|p| parts.contains(p)) {
            let (kinds, strengths): (&[Kind], &[f64]) = match part {
                Part::Rate => (&Kind::RATES, &STRENGTHS),
                Part::Volume => (&[Kind::Volume], &VOLUME_FACTORS),
            };
            for kind in kinds {
                for strength in strengths {
                    for duration in DURATIONS {
                        for volume in Volume::ALL {
                            for scope in Scope::ALL {
                                out.push(Cell { kind: *kind, strength: *strength, duration, volume, scope });
                            }
                        }
                    }
                }
            }
        }
        out
    }

    pub fn part(&self) -> Part {
        self.kind.part()
    }

    pub fn label(&self) -> String {
        format!(
            "{} ×{} {}m {} {}",
            self.kind.as_str(),
            self.strength,
            self.duration,
            self.volume.as_str(),
            self.scope.as_str()
        )
    }

    /// Transactions a minute in the incident's scope at its time of day, and in all traffic.
    pub fn volumes(&self, s: &Scenario) -> (f64, f64) {
        let t = self.volume.hour() * 60 * MINUTE_MS;
        let all = s.events_per_minute * s.daily_cycle.map_or(1.0, |c| c.factor(t, 0));
        (all * self.scope.weight(s), all)
    }

    /// The scenario of one case: warm-up, the incident centred on its hour, the tail; and the
    /// start (ms since the epoch) that puts it there, on 2026-01-05 (a Monday).
    pub fn scenario(&self, base: &Scenario) -> vigil_simulator::Result<(Scenario, i64)> {
        let minutes = WARM_UP_MINUTES + self.duration + TAIL_MINUTES;
        let mut src = base.source.clone();
        src = src.replacen("duration = \"24h\"", &format!("duration = \"{minutes}m\""), 1);
        src = src.replacen("name = \"busy-day\"", &format!("name = \"{}\"", self.name()), 1);
        src += &format!(
            "\n[[incidents]]\nstart = \"{WARM_UP_MINUTES}m\"\nduration = \"{}m\"\n{}",
            self.duration,
            self.kind.incident_toml(self.strength, self.scope, base)
        );
        let scenario = Scenario::from_toml(&src)?;
        let onset = DAY0_MS + self.volume.hour() * 60 * MINUTE_MS - (self.duration / 2) * MINUTE_MS;
        Ok((scenario, onset - WARM_UP_MINUTES * MINUTE_MS))
    }

    fn name(&self) -> String {
        format!(
            "{}-x{}-{}m-{}-{}",
            self.kind.as_str(),
            self.strength,
            self.duration,
            self.volume.as_str(),
            self.scope.as_str()
        )
        .replace('.', "_")
    }

    /// A seed of its own per cell and run, so no two cases share their background noise;
    /// `index` is the cell's place in [`Cell::all`], so a cell has the same runs in the full
    /// catalogue, in `--quick` and with `--only`.
    pub fn seed(&self, index: usize, run: u64) -> u64 {
        1_000_003 * (index as u64 + 1) + run
    }

    /// The cell's place in [`Cell::all`] (its seeds' index); a cell outside the catalogue gets
    /// one past it.
    pub fn index(&self) -> usize {
        let all = Cell::all();
        all.iter().position(|c| c == self).unwrap_or(all.len())
    }
}

/// 2026-01-05T00:00:00Z.
pub const DAY0_MS: i64 = 1_767_571_200_000;

/// The base scenario, checked.
pub fn base() -> vigil_simulator::Result<Scenario> {
    Scenario::builtin(BASE_SCENARIO)
}

/// Which cells and how many runs of each, and how many normal days.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub cells: Vec<Cell>,
    /// Runs (seeds) per cell.
    pub seeds: u64,
    /// Normal days (one seed each).
    pub days: u64,
    /// Normal weeks for the volume rules (one seed each): see [`normal_week`].
    pub weeks: u64,
}

/// Daytime traffic on Saturdays and Sundays in the normal weeks: × 0.6 of the weekdays' above
/// the night's trough (the simulator's `weekend_factor`).
pub const WEEKEND_FACTOR: f64 = 0.6;
/// The normal weeks' slow trend: 2 % more traffic every day (even weeks) or 2 % less (odd).
pub const TREND_PER_DAY: f64 = 0.02;

/// Normal week `w`: seven days of the busy day's traffic without an incident, from a Thursday
/// 00:00 UTC (so a week holds the step into a weekend and the one out of it), with a quieter
/// weekend and a slow trend up or down (see [`WEEKEND_FACTOR`], [`TREND_PER_DAY`]); one model
/// runs through all of it, so the volume rules meet what a week brings, not one day at a time.
/// Returns the scenario and its start.
pub fn normal_week(base: &Scenario, w: u64) -> (Scenario, i64) {
    let mut s = base.clone();
    s.name = format!("normal-week-{w}");
    s.duration_ms = 7 * 24 * 60 * MINUTE_MS;
    if let Some(c) = &mut s.daily_cycle {
        c.weekend_factor = WEEKEND_FACTOR;
        c.trend_per_day = if w % 2 == 0 { TREND_PER_DAY } else { -TREND_PER_DAY };
    }
    // DAY0 is a Monday; weeks follow one another in time.
    (s, DAY0_MS + 3 * 24 * 60 * MINUTE_MS + w as i64 * 7 * 24 * 60 * MINUTE_MS)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_normal_week_starts_on_a_thursday_runs_seven_days_and_trends_up_or_down_in_turn() {
        let base = base().unwrap();
        let (up, start) = normal_week(&base, 0);
        let (down, next) = normal_week(&base, 1);
        let day = 24 * 60 * MINUTE_MS;
        // Day 0 of the epoch was a Thursday.
        assert_eq!(start.rem_euclid(day), 0);
        assert_eq!(start.div_euclid(day).rem_euclid(7), 0);
        assert_eq!((up.duration_ms, next - start), (7 * day, 7 * day));
        let (u, d) = (up.daily_cycle.unwrap(), down.daily_cycle.unwrap());
        assert_eq!(
            (u.weekend_factor, u.trend_per_day, d.trend_per_day),
            (WEEKEND_FACTOR, TREND_PER_DAY, -TREND_PER_DAY)
        );
        // Saturday's peak is quieter than Friday's; the nights are alike.
        let at = |t: i64| u.factor(t, start);
        let peak = 13 * 60 * MINUTE_MS;
        assert!(at(start + day + peak) > 1.4 * at(start + 2 * day + peak));
    }

    #[test]
    fn the_catalogue_covers_every_value_of_every_axis_and_every_case_is_a_valid_scenario() {
        let base = base().unwrap();
        let cells = Cell::all();
        assert_eq!(cells.len(), 288 + 72);
        assert_eq!(Cell::of(&[Part::Rate]), cells[..288]);
        assert_eq!(Cell::of(&[Part::Volume]), cells[288..]);
        assert!(cells[288..].iter().all(|c| c.kind == Kind::Volume && VOLUME_FACTORS.contains(&c.strength)));
        for cell in &cells {
            let (s, start) = cell.scenario(&base).unwrap_or_else(|e| panic!("{}: {e}", cell.label()));
            assert_eq!(s.incidents.len(), 1);
            let onset = start + s.incidents[0].start_ms;
            let hour = (onset + s.incidents[0].duration_ms / 2).rem_euclid(86_400_000) as f64 / 3_600_000.0;
            assert!((hour - cell.volume.hour() as f64).abs() < 0.02, "{}: centred on {hour}", cell.label());
        }
    }

    #[test]
    fn night_and_peak_volumes_are_about_50_and_300_a_minute() {
        let base = base().unwrap();
        let at = |volume, scope| Cell { kind: Kind::Denied, strength: 2.0, duration: 10, volume, scope }.volumes(&base);
        let (night, _) = at(Volume::Night, Scope::Global);
        let (peak, _) = at(Volume::Peak, Scope::Global);
        assert!((night - 50.0).abs() < 2.0, "{night}");
        assert!((peak - 300.0).abs() < 2.0, "{peak}");
        let (merchant, all) = at(Volume::Peak, Scope::Merchant);
        assert!((merchant / all - 0.2).abs() < 1e-9, "{merchant} of {all}");
    }

    fn target_rate(toml: &str) -> f64 {
        toml.lines().find_map(|l| l.strip_prefix("target_rate = ")).unwrap().parse().unwrap()
    }

    #[test]
    fn the_target_rate_multiplies_the_normal_rate() {
        let base = base().unwrap();
        let toml = Kind::Failed.incident_toml(2.0, Scope::Merchant, &base);
        assert!(toml.contains("status = \"failed\"") && toml.contains("merchant = \"m-market-1\""), "{toml}");
        assert!((target_rate(&toml) - 0.06).abs() < 1e-9, "{toml}");
        let toml = Kind::AuthCode.incident_toml(6.0, Scope::Global, &base);
        assert!(toml.contains("code = \"51\""), "{toml}");
        assert!((target_rate(&toml) - 0.144).abs() < 1e-9, "{toml}");
    }

    #[test]
    fn a_volume_cell_writes_a_volume_incident_whose_truth_expects_the_drop_or_surge_rule_on_its_scope() {
        let base = base().unwrap();
        assert_eq!(
            Kind::Volume.incident_toml(0.5, Scope::Category, &base),
            "kind = \"volume\"\ncategory = \"food\"\nfactor = 0.5\n"
        );
        for (strength, scope, expected) in [
            (0.0, Scope::Global, "volume_drop:global:all"),
            (0.5, Scope::Merchant, "volume_drop:merchant:m-market-1"),
            (2.0, Scope::Category, "volume_surge:category:food"),
        ] {
            let cell = Cell { kind: Kind::Volume, strength, duration: 10, volume: Volume::Peak, scope };
            let (s, start) = cell.scenario(&base).unwrap();
            let g = vigil_simulator::Generator::new(s, 1, chrono::DateTime::from_timestamp_millis(start).unwrap());
            let truth = &g.truth().incidents[0];
            assert_eq!(
                truth.expected.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                [expected],
                "{}",
                cell.label()
            );
        }
    }

    #[test]
    fn a_cell_keeps_its_seeds_whichever_part_of_the_catalogue_runs() {
        let volume = Cell::of(&[Part::Volume]);
        assert_eq!(volume[0].index(), 288);
        assert_eq!(Cell::of(&[Part::Rate])[5].index(), 5);
        assert_ne!(volume[0].seed(volume[0].index(), 0), Cell::all()[0].seed(0, 0));
    }
}
