//! `vigil`: the command line of the people who act on anomalies, over the webhook service's API
//! (`GET /alerts`, `/alerts/{id}/triage`, `/silences`). Tables for people, `--json` for scripts.
//!
//! Where it connects: `--url`/`VIGIL_WEBHOOK_URL`, `--token`/`VIGIL_TOKEN` (a TRIAGE_USERS token
//! names its user; a write token needs `--user`/`VIGIL_USER`), else `WEBHOOK_URL` and
//! `WEBHOOK_TOKEN` from `.vigil/run.env` (what `make run` writes), else `./.vigil/run.env`'s
//! values found from the current directory upwards.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde_json::{json, Value};

/// The CLI's failures, each with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no webhook URL: pass --url, set VIGIL_WEBHOOK_URL, or run `make run` (it writes .vigil/run.env)")]
    NoUrl,
    #[error("no token: pass --token or set VIGIL_TOKEN (a TRIAGE_USERS token, or a read token to list)")]
    NoToken,
    #[error("cannot reach {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    /// The service refused the request: its problem+json, summarised.
    #[error("{status}: {summary}")]
    Refused { status: u16, summary: String },
    #[error("the service answered something that is not JSON: {0}")]
    NotJson(String),
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// vigil: list, show, acknowledge, assign, close and silence Vigil's anomalies.
#[derive(Parser, Debug)]
#[command(name = "vigil", version)]
pub struct Cli {
    /// The webhook service, e.g. http://127.0.0.1:3001.
    #[arg(long, env = "VIGIL_WEBHOOK_URL", global = true)]
    pub url: Option<String>,
    /// Bearer token: a TRIAGE_USERS token (names you), a write token (with --user) or a read token.
    #[arg(long, env = "VIGIL_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Who acts, when the token is a write token (sent as X-Vigil-User).
    #[arg(long, env = "VIGIL_USER", global = true)]
    pub user: Option<String>,
    /// Print the service's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List anomalies, newest first.
    Alerts(AlertFilters),
    /// One anomaly's triage and its audit trail.
    Show { id: String },
    /// Acknowledge an anomaly.
    Ack {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Assign an anomaly to someone (`--none` to unassign).
    Assign {
        id: String,
        /// Who.
        assignee: Option<String>,
        #[arg(long, conflicts_with = "assignee")]
        none: bool,
        #[arg(long)]
        note: Option<String>,
    },
    /// Close an anomaly with a disposition.
    Close {
        id: String,
        /// true_positive, false_positive, benign or duplicate.
        #[arg(long)]
        disposition: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Re-open a closed anomaly.
    Reopen {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Silences and maintenance windows.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// The detector's rule settings, changed without a restart.
    #[command(subcommand)]
    Settings(SettingsCommand),
}

#[derive(Subcommand, Debug)]
pub enum SettingsCommand {
    /// Published settings records, newest first.
    List {
        /// global, category:<category> or merchant:<merchant_id>.
        #[arg(long)]
        scope: Option<String>,
    },
    /// Publish a record: the amount rule's overrides for a scope from a minute on (none given:
    /// back to the defaults).
    Set {
        /// global, category:<category> or merchant:<merchant_id>.
        #[arg(long)]
        scope: String,
        /// RFC 3339 minute; default the earliest allowed (SETTINGS_LEAD after now).
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        z_medium: Option<f64>,
        #[arg(long)]
        z_high: Option<f64>,
        #[arg(long)]
        z_critical: Option<f64>,
        /// medium, high or critical.
        #[arg(long)]
        min_severity: Option<String>,
        #[arg(long)]
        min_samples: Option<u64>,
        #[arg(long, default_value = "")]
        comment: String,
    },
}

#[derive(Args, Debug, Default)]
pub struct AlertFilters {
    /// firing, updated, resolved (comma-separated).
    #[arg(long)]
    pub state: Option<String>,
    /// medium, high, critical (comma-separated).
    #[arg(long)]
    pub severity: Option<String>,
    /// open, acknowledged, closed (comma-separated).
    #[arg(long)]
    pub triage_state: Option<String>,
    #[arg(long)]
    pub assignee: Option<String>,
    /// e.g. denied_rate, volume_drop (comma-separated).
    #[arg(long)]
    pub rule: Option<String>,
    #[arg(long)]
    pub merchant: Option<String>,
    /// true or false.
    #[arg(long)]
    pub silenced: Option<String>,
    /// Rows (at most 500).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Subcommand, Debug)]
pub enum SilenceCommand {
    /// Create a silence (a maintenance window with --starts-at in the future).
    Create {
        #[arg(long)]
        rule: Option<String>,
        /// global, category, merchant or auth_code.
        #[arg(long)]
        dimension: Option<String>,
        /// The dimension's value.
        #[arg(long)]
        value: Option<String>,
        #[arg(long)]
        merchant: Option<String>,
        #[arg(long)]
        category: Option<String>,
        /// medium, high, critical (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        severity: Vec<String>,
        /// RFC 3339; default now.
        #[arg(long)]
        starts_at: Option<String>,
        /// RFC 3339.
        #[arg(long, conflicts_with = "duration")]
        ends_at: Option<String>,
        /// How long from the start, e.g. 2h, 30m, 1d.
        #[arg(long = "for", id = "duration")]
        duration: Option<String>,
        /// Why.
        #[arg(long)]
        comment: String,
    },
    /// List silences (pending, active, expired).
    List {
        #[arg(long)]
        state: Option<String>,
    },
    /// Expire a silence now.
    Expire { id: String },
}

/// Where to connect, once resolved.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub token: String,
    pub user: Option<String>,
}

/// `KEY=VALUE` lines of a `run.env` (comments, `export ` and quotes allowed).
pub fn read_env_file(path: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("export ").unwrap_or(l);
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').trim_matches('\'').to_owned()))
        })
        .collect()
}

/// `.vigil/run.env` from `start` upwards.
pub fn find_run_env(start: &Path) -> Option<PathBuf> {
    start.ancestors().map(|d| d.join(".vigil/run.env")).find(|p| p.is_file())
}

impl Cli {
    /// The URL and token: flags and VIGIL_* first, then run.env.
    pub fn target(&self, run_env: Option<&Path>) -> Result<Target> {
        let file = run_env.map(read_env_file).unwrap_or_default();
        let from_file = |k: &str| file.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let url = self.url.clone().or_else(|| from_file("WEBHOOK_URL")).ok_or(Error::NoUrl)?;
        let token = self.token.clone().or_else(|| from_file("WEBHOOK_TOKEN")).ok_or(Error::NoToken)?;
        Ok(Target { url: url.trim_end_matches('/').to_owned(), token, user: self.user.clone() })
    }
}

/// Runs one command; returns what to print.
pub async fn run(cli: &Cli, target: &Target) -> Result<String> {
    let client = Client { http: reqwest::Client::new(), target: target.clone() };
    let (value, table): (Value, fn(&Value) -> String) = match &cli.command {
        Command::Alerts(f) => {
            let mut q: Vec<(&str, String)> = vec![("limit", f.limit.to_string())];
            for (k, v) in [
                ("state", &f.state),
                ("severity", &f.severity),
                ("triage_state", &f.triage_state),
                ("assignee", &f.assignee),
                ("rule", &f.rule),
                ("merchant_id", &f.merchant),
                ("silenced", &f.silenced),
            ] {
                if let Some(v) = v {
                    q.push((k, v.clone()));
                }
            }
            (client.get("/alerts", &q).await?, alerts_table)
        }
        Command::Show { id } => (client.get(&format!("/alerts/{}/triage", encode(id)), &[]).await?, show_table),
        Command::Ack { id, note } => {
            (triage(&client, id, json!({"action": "acknowledge", "note": note})).await?, triage_table)
        }
        Command::Assign { id, assignee, none, note } => {
            if assignee.is_none() && !none {
                return Err(Error::Usage("name the assignee, or pass --none to unassign".into()));
            }
            (triage(&client, id, json!({"action": "assign", "assignee": assignee, "note": note})).await?, triage_table)
        }
        Command::Close { id, disposition, note } => (
            triage(&client, id, json!({"action": "close", "disposition": disposition, "note": note})).await?,
            triage_table,
        ),
        Command::Reopen { id, note } => {
            (triage(&client, id, json!({"action": "reopen", "note": note})).await?, triage_table)
        }
        Command::Silence(SilenceCommand::Create {
            rule,
            dimension,
            value,
            merchant,
            category,
            severity,
            starts_at,
            ends_at,
            duration,
            comment,
        }) => {
            let ends_at = match (ends_at, duration) {
                (Some(e), _) => e.clone(),
                (None, Some(d)) => {
                    let start = match starts_at {
                        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
                            .map_err(|e| Error::Usage(format!("--starts-at: {e}")))?
                            .with_timezone(&chrono::Utc),
                        None => chrono::Utc::now(),
                    };
                    (start + parse_duration(d)?).to_rfc3339()
                }
                (None, None) => return Err(Error::Usage("give --ends-at or --for".into())),
            };
            let mut body = json!({"ends_at": ends_at, "comment": comment});
            for (k, v) in [
                ("rule", rule),
                ("dimension", dimension),
                ("dimension_value", value),
                ("merchant_id", merchant),
                ("category", category),
                ("starts_at", starts_at),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if !severity.is_empty() {
                body["severities"] = json!(severity);
            }
            (client.post("/silences", &body).await?, silence_table)
        }
        Command::Silence(SilenceCommand::List { state }) => {
            let q: Vec<(&str, String)> = state.iter().map(|s| ("state", s.clone())).collect();
            (client.get("/silences", &q).await?, silences_table)
        }
        Command::Settings(SettingsCommand::List { scope }) => {
            let q: Vec<(&str, String)> = scope.iter().map(|s| ("scope", s.clone())).collect();
            (client.get("/settings", &q).await?, settings_table)
        }
        Command::Settings(SettingsCommand::Set {
            scope,
            from,
            z_medium,
            z_high,
            z_critical,
            min_severity,
            min_samples,
            comment,
        }) => {
            let mut amount = serde_json::Map::new();
            for (k, v) in [("z_medium", z_medium), ("z_high", z_high), ("z_critical", z_critical)] {
                if let Some(v) = v {
                    amount.insert(k.into(), json!(v));
                }
            }
            if let Some(s) = min_severity {
                amount.insert("min_severity".into(), json!(s));
            }
            if let Some(n) = min_samples {
                amount.insert("min_samples".into(), json!(n));
            }
            let mut body = json!({"scope": scope, "amount": amount, "comment": comment});
            if let Some(f) = from {
                body["effective_from"] = json!(f);
            }
            let published = client.post("/settings", &body).await?;
            (json!({"items": [published]}), settings_table)
        }
        Command::Silence(SilenceCommand::Expire { id }) => {
            (client.post(&format!("/silences/{}/expire", encode(id)), &json!({})).await?, silence_table)
        }
    };
    Ok(if cli.json { serde_json::to_string_pretty(&value).unwrap_or_default() } else { table(&value) })
}

async fn triage(client: &Client, id: &str, mut body: Value) -> Result<Value> {
    // Unset fields are left out; `assignee: null` stays (it unassigns).
    if let Some(o) = body.as_object_mut() {
        o.retain(|k, v| !v.is_null() || k == "assignee");
    }
    client.post(&format!("/alerts/{}/triage", encode(id)), &body).await
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `90s`, `30m`, `2h`, `1d`.
pub fn parse_duration(s: &str) -> Result<chrono::Duration> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n.parse().map_err(|_| Error::Usage(format!("--for {s:?}: a number and a unit, e.g. 2h")))?;
    match unit {
        "s" => Ok(chrono::Duration::seconds(n)),
        "m" => Ok(chrono::Duration::minutes(n)),
        "h" => Ok(chrono::Duration::hours(n)),
        "d" => Ok(chrono::Duration::days(n)),
        _ => Err(Error::Usage(format!("--for {s:?}: the unit is s, m, h or d"))),
    }
}

struct Client {
    http: reqwest::Client,
    target: Target,
}

impl Client {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.target.url)).bearer_auth(&self.target.token);
        if let Some(u) = &self.target.user {
            r = r.header("x-vigil-user", u);
        }
        r
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        self.send(self.request(reqwest::Method::GET, path).query(query)).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value> {
        self.send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<Value> {
        let resp = r.send().await.map_err(|source| Error::Unreachable { url: self.target.url.clone(), source })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|source| Error::Unreachable { url: self.target.url.clone(), source })?;
        let value: Value = serde_json::from_str(&text).map_err(|_| Error::NotJson(text.chars().take(200).collect()))?;
        if status >= 400 {
            return Err(Error::Refused { status, summary: problem_summary(&value) });
        }
        Ok(value)
    }
}

/// A problem+json in one line: its title, detail and each field error.
pub fn problem_summary(p: &Value) -> String {
    let mut parts = vec![p["title"].as_str().unwrap_or("refused").to_owned()];
    if let Some(d) = p["detail"].as_str() {
        parts.push(d.to_owned());
    }
    for e in p["errors"].as_array().into_iter().flatten() {
        parts.push(format!("{}: {}", e["field"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("")));
    }
    parts.join("; ")
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    t
}

fn alerts_table(v: &Value) -> String {
    let mut t = table();
    t.set_header(["first seen", "id", "severity", "rule", "subject", "state", "triage", "assignee", "silenced"]);
    for a in v["items"].as_array().into_iter().flatten() {
        t.add_row([
            s(&a["first_seen"]),
            s(&a["id"]),
            s(&a["severity"]),
            s(&a["rule"]),
            format!("{} {}", s(&a["dimension"]), s(&a["dimension_value"])),
            s(&a["state"]),
            s(&a["triage_state"]),
            s(&a["assignee"]),
            if a["silenced"] == true { "yes".into() } else { String::new() },
        ]);
    }
    let mut out = t.to_string();
    if let Some(c) = v["next_cursor"].as_str() {
        out.push_str(&format!("\nmore: GET /alerts?cursor={c}"));
    }
    out
}

fn triage_table(v: &Value) -> String {
    let mut t = table();
    t.set_header(["version", "triage", "assignee", "disposition", "by", "at", "note"]);
    t.add_row([
        s(&v["version"]),
        s(&v["state"]),
        s(&v["assignee"]),
        s(&v["disposition"]),
        s(&v["updated_by"]),
        s(&v["updated_at"]),
        s(&v["note"]),
    ]);
    t.to_string()
}

fn show_table(v: &Value) -> String {
    let mut out = format!("{}\n{}\n", s(&v["anomaly_id"]), triage_table(&v["triage"]));
    let mut t = table();
    t.set_header(["version", "action", "by", "at", "before", "after", "note"]);
    for e in v["audit"].as_array().into_iter().flatten() {
        t.add_row([
            s(&e["version"]),
            s(&e["action"]),
            s(&e["actor"]),
            s(&e["at"]),
            s(&e["before"]["state"]),
            s(&e["after"]["state"]),
            s(&e["note"]),
        ]);
    }
    out.push_str(&t.to_string());
    out
}

fn settings_table(v: &Value) -> String {
    let mut t = table();
    t.set_header(["scope", "from", "amount overrides", "by", "at", "comment"]);
    for x in v["items"].as_array().into_iter().flatten() {
        let amount: Vec<String> =
            x["record"]["amount"].as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", s(v))).collect();
        t.add_row([
            s(&x["scope"]),
            s(&x["effective_from"]),
            if amount.is_empty() { "defaults".to_owned() } else { amount.join(" ") },
            s(&x["actor"]),
            s(&x["at"]),
            s(&x["record"]["comment"]),
        ]);
    }
    t.to_string()
}

fn silence_row(x: &Value) -> Vec<String> {
    let matchers: Vec<String> = ["rule", "dimension", "dimension_value", "merchant_id", "category", "severities"]
        .iter()
        .filter(|k| !x[**k].is_null())
        .map(|k| format!("{k}={}", s(&x[*k])))
        .collect();
    vec![
        s(&x["id"]),
        s(&x["state"]),
        matchers.join(" "),
        s(&x["starts_at"]),
        s(&x["ends_at"]),
        s(&x["created_by"]),
        s(&x["comment"]),
    ]
}

fn silence_table(v: &Value) -> String {
    let mut t = table();
    t.set_header(["id", "state", "matches", "starts", "ends", "by", "comment"]);
    t.add_row(silence_row(v));
    t.to_string()
}

fn silences_table(v: &Value) -> String {
    let mut t = table();
    t.set_header(["id", "state", "matches", "starts", "ends", "by", "comment"]);
    for x in v["items"].as_array().into_iter().flatten() {
        t.add_row(silence_row(x));
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_env_lines_are_read_with_exports_quotes_and_comments() {
        let dir = std::env::temp_dir().join(format!("vigil-cli-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".vigil")).unwrap();
        std::fs::write(
            dir.join(".vigil/run.env"),
            "# made by make run\nWEBHOOK_URL=http://127.0.0.1:3001\nexport WEBHOOK_TOKEN=\"abc\"\n",
        )
        .unwrap();
        let found = find_run_env(&dir.join(".vigil")).unwrap();
        let cli = Cli::parse_from(["vigil", "alerts"]);
        let t = cli.target(Some(&found)).unwrap();
        assert_eq!((t.url.as_str(), t.token.as_str()), ("http://127.0.0.1:3001", "abc"));
        let cli = Cli::parse_from(["vigil", "--url=http://x/", "--token=t", "alerts"]);
        assert_eq!(cli.target(Some(&found)).unwrap().url, "http://x");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn durations_and_path_segments() {
        assert_eq!(parse_duration("2h").unwrap(), chrono::Duration::hours(2));
        assert_eq!(parse_duration("90s").unwrap(), chrono::Duration::seconds(90));
        assert!(parse_duration("2 weeks").is_err());
        assert_eq!(encode("amount_zscore:merchant:m 1/x"), "amount_zscore%3Amerchant%3Am%201%2Fx");
    }
}
