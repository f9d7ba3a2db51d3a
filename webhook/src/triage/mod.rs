//! Triage of detector anomalies: acknowledge, assign, close with a disposition, re-open.
//!
//! * Every action is an append-only audit record (who, when, what, the state before and
//!   after, the note); the anomaly's current triage is the `after` of its latest record.
//! * Who acts: a user token (`TRIAGE_USERS`, `name:token` pairs) names its user; a write token
//!   (`WEBHOOK_TOKENS`, for integrations) must name the user in `X-Vigil-User`. Read tokens
//!   cannot act.
//! * Concurrency: actions on one anomaly are serialised; the answer carries the new version as
//!   an ETag, and an action sent with `If-Match` naming an older version is refused with 412
//!   (nothing lost: the client reads the current state and decides again).
//! * Transitions: `acknowledge` from open; `assign` (or unassign with `"assignee": null`) while
//!   not closed; `close` with a disposition from open or acknowledged; `reopen` from closed (back
//!   to acknowledged). Anything else is 409 naming the current state.

pub mod queue;
pub mod store;

use axum::extract::{Path, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use vigil_common::problem::{FieldError, Problem};

use self::store::AuditEvent;
use crate::error::ApiError;
use crate::openapi::ProblemDoc;
use crate::state::AppState;

/// What a closed anomaly turned out to be.
pub const DISPOSITIONS: [&str; 4] = ["true_positive", "false_positive", "benign", "duplicate"];
const MAX_NOTE: usize = 2000;
const MAX_NAME: usize = 64;

/// An anomaly's triage state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Open,
    Acknowledged,
    Closed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Open => "open",
            State::Acknowledged => "acknowledged",
            State::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        match s {
            "open" => Some(State::Open),
            "acknowledged" => Some(State::Acknowledged),
            "closed" => Some(State::Closed),
            _ => None,
        }
    }
}

/// An anomaly's current triage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Triage {
    /// 0 before the first action; each action adds one. Sent as the ETag.
    pub version: i32,
    pub state: State,
    pub assignee: Option<String>,
    /// Set when closed: true_positive, false_positive, benign or duplicate.
    pub disposition: Option<String>,
    /// The latest action's note.
    pub note: Option<String>,
    pub updated_at: Option<DateTime<Utc>>,
    pub updated_by: Option<String>,
}

/// An action on an anomaly's triage.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Acknowledge { note: Option<String> },
    Assign { assignee: Option<String>, note: Option<String> },
    Close { disposition: String, note: Option<String> },
    Reopen { note: Option<String> },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Acknowledge { .. } => "acknowledge",
            Action::Assign { .. } => "assign",
            Action::Close { .. } => "close",
            Action::Reopen { .. } => "reopen",
        }
    }

    pub fn note(&self) -> Option<&str> {
        match self {
            Action::Acknowledge { note }
            | Action::Assign { note, .. }
            | Action::Close { note, .. }
            | Action::Reopen { note } => note.as_deref(),
        }
    }
}

/// Why an action was not applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// If-Match named another version.
    Stale { current: i32 },
    /// Not allowed from the current state.
    Transition { action: &'static str, state: State },
}

impl Triage {
    /// The state after `action`, or why it is not allowed (audit fields left to the store).
    pub fn apply(&self, action: &Action, actor: &str) -> Result<Triage, Refusal> {
        let refuse = || Refusal::Transition { action: action.name(), state: self.state };
        let mut next = Triage { version: self.version + 1, note: action.note().map(str::to_owned), ..self.clone() };
        let _ = actor;
        match (action, self.state) {
            (Action::Acknowledge { .. }, State::Open) => next.state = State::Acknowledged,
            (Action::Assign { assignee, .. }, State::Open | State::Acknowledged) => next.assignee = assignee.clone(),
            (Action::Close { disposition, .. }, State::Open | State::Acknowledged) => {
                next.state = State::Closed;
                next.disposition = Some(disposition.clone());
            }
            (Action::Reopen { .. }, State::Closed) => {
                next.state = State::Acknowledged;
                next.disposition = None;
            }
            _ => return Err(refuse()),
        }
        Ok(next)
    }

    /// What the audit trail records of a state.
    pub fn audit_json(&self) -> Value {
        serde_json::json!({
            "version": self.version,
            "state": self.state.as_str(),
            "assignee": self.assignee,
            "disposition": self.disposition,
        })
    }

    fn etag(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("\"{}\"", self.version)).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
    }
}

/// The body of `POST /alerts/{id}/triage`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageRequest {
    /// acknowledge, assign, close or reopen.
    #[schema(example = "close")]
    pub action: String,
    /// For assign: who (1 to 64 characters), or null to unassign.
    pub assignee: Option<String>,
    /// For close: true_positive, false_positive, benign or duplicate.
    pub disposition: Option<String>,
    /// Free text, at most 2000 characters, kept in the audit trail.
    pub note: Option<String>,
}

/// An anomaly's triage with its audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct TriageView {
    pub anomaly_id: String,
    pub triage: Triage,
    pub audit: Vec<AuditEvent>,
}

fn invalid(errors: Vec<FieldError>) -> Problem {
    crate::validation::unprocessable("invalid-triage", "Invalid triage action", errors)
}

use crate::validation::field;

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.chars().count() <= MAX_NAME
        && s.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ' '))
        && s.trim() == s
}

/// Checks a request into an [`Action`], naming every bad field.
pub fn parse(req: TriageRequest) -> Result<Action, Problem> {
    let mut errors = Vec::new();
    if let Some(n) = &req.note {
        if n.chars().count() > MAX_NOTE {
            errors.push(field("note", format!("at most {MAX_NOTE} characters")));
        }
    }
    let note = req.note.clone();
    let action = match req.action.as_str() {
        "acknowledge" | "reopen" => {
            if req.assignee.is_some() {
                errors.push(field("assignee", "only with action assign"));
            }
            if req.disposition.is_some() {
                errors.push(field("disposition", "only with action close"));
            }
            if req.action == "acknowledge" {
                Some(Action::Acknowledge { note })
            } else {
                Some(Action::Reopen { note })
            }
        }
        "assign" => {
            if let Some(a) = &req.assignee {
                if !name_ok(a) {
                    errors.push(field("assignee", "1 to 64 letters, digits, spaces or . _ - @, no surrounding spaces"));
                }
            }
            if req.disposition.is_some() {
                errors.push(field("disposition", "only with action close"));
            }
            Some(Action::Assign { assignee: req.assignee.clone(), note })
        }
        "close" => {
            if req.assignee.is_some() {
                errors.push(field("assignee", "only with action assign"));
            }
            match req.disposition.as_deref() {
                Some(d) if DISPOSITIONS.contains(&d) => Some(Action::Close { disposition: d.to_owned(), note }),
                Some(_) => {
                    errors.push(field("disposition", format!("one of {}", DISPOSITIONS.join(", "))));
                    None
                }
                None => {
                    errors.push(field("disposition", "required to close"));
                    None
                }
            }
        }
        _ => {
            errors.push(field("action", "one of acknowledge, assign, close, reopen"));
            None
        }
    };
    match action {
        Some(a) if errors.is_empty() => Ok(a),
        _ => Err(invalid(errors)),
    }
}

/// The body as a request, with every unknown field and every field of the wrong type named.
fn request(value: Value) -> Result<(TriageRequest, Vec<FieldError>), Problem> {
    let Value::Object(obj) = value else { return Err(invalid(vec![field("body", "must be a JSON object")])) };
    let mut errors =
        crate::validation::unknown_keys(obj.keys(), &["action", "assignee", "disposition", "note"], "field");
    let text = |name: &str, errors: &mut Vec<FieldError>| match obj.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(field(name, "must be a string"));
            None
        }
    };

    let action = text("action", &mut errors);
    let req = TriageRequest {
        action: action.clone().unwrap_or_default(),
        assignee: text("assignee", &mut errors),
        disposition: text("disposition", &mut errors),
        note: text("note", &mut errors),
    };
    if action.is_none() && !errors.iter().any(|e| e.field == "action") {
        errors.push(field("action", "required: acknowledge, assign, close or reopen"));
    }
    Ok((req, errors))
}

/// The version an `If-Match` header names (`"3"`, `W/"3"` or `3`), if any.
fn if_match(headers: &HeaderMap) -> Result<Option<i32>, Problem> {
    let Some(v) = headers.get(header::IF_MATCH) else { return Ok(None) };
    let s = v.to_str().unwrap_or_default().trim();
    let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    s.parse::<i32>().map(Some).map_err(|_| invalid(vec![field("If-Match", "the ETag of the triage, e.g. \"3\"")]))
}

fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found").detail("No anomaly with this id.")
}

/// An anomaly's triage and its audit trail.
#[utoipa::path(
    get,
    path = "/alerts/{id}/triage",
    tag = "triage",
    params(("id" = String, Path, description = "The anomaly's id, as in GET /alerts.")),
    responses(
        (status = 200, description = "The current triage (ETag: its version) and every action, oldest first", body = TriageView),
        (status = 401, description = "Missing or wrong token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No anomaly with this id", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_triage(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.authorize_read(&headers)?;
    let db = &state.metrics.db;
    if !store::anomaly_exists(&state.pool, db, &id).await? {
        return Err(not_found().into());
    }
    let triage = store::current(&state.pool, db, &id).await?;
    let audit = store::audit(&state.pool, db, &id).await?;
    let etag = triage.etag();
    Ok(([(header::ETAG, etag)], Json(TriageView { anomaly_id: id, triage, audit })).into_response())
}

/// Acknowledges, assigns, closes or re-opens an anomaly.
#[utoipa::path(
    post,
    path = "/alerts/{id}/triage",
    tag = "triage",
    params(
        ("id" = String, Path, description = "The anomaly's id, as in GET /alerts."),
        ("If-Match" = Option<String>, Header, description = "The ETag of the triage the action was decided on; a newer one refuses the action with 412."),
        ("X-Vigil-User" = Option<String>, Header, description = "Who acts, when the token is a write token (a TRIAGE_USERS token names its user itself)."),
    ),
    request_body(content = TriageRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied: the new triage (ETag: its version)", body = Triage),
        (status = 400, description = "Malformed JSON", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong token, or a read token", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 404, description = "No anomaly with this id", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "Not allowed from the current state (e.g. acknowledging a closed anomaly)", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "If-Match names an older version: read the triage again", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 422, description = "A bad field (action, assignee, disposition, note, If-Match, X-Vigil-User); `errors` names each", body = ProblemDoc, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn post_triage(
    AxumState(state): AxumState<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let actor = state.authorize_triage(&headers)?;
    let value = crate::validation::json_body(&headers, &body)?;
    let (req, mut errors) = request(value)?;
    let action = match parse(req) {
        Ok(a) if errors.is_empty() => a,
        Ok(_) => return Err(invalid(errors).into()),
        Err(p) => {
            let more: Vec<FieldError> =
                p.errors.into_iter().filter(|e| !errors.iter().any(|seen| seen.field == e.field)).collect();
            errors.extend(more);
            return Err(invalid(errors).into());
        }
    };
    let expected = if_match(&headers)?;
    let db = &state.metrics.db;
    if !store::anomaly_exists(&state.pool, db, &id).await? {
        return Err(not_found().into());
    }
    match store::apply(&state.pool, db, &id, &actor, &action, expected).await? {
        Ok(t) => {
            tracing::info!(anomaly = %id, action = action.name(), actor = %actor, version = t.version, "Triage action applied.");
            let etag = t.etag();
            Ok((StatusCode::OK, [(header::ETAG, etag)], Json(t)).into_response())
        }
        Err(Refusal::Stale { current }) => {
            Err(Problem::new(StatusCode::PRECONDITION_FAILED, "stale-triage", "The triage changed since it was read")
                .detail(format!(
                    "If-Match names another version; the current one is \"{current}\". Read it again and decide."
                ))
                .into())
        }
        Err(Refusal::Transition { action, state: s }) => {
            Err(Problem::new(StatusCode::CONFLICT, "triage-transition", "Not allowed from the current state")
                .detail(format!("Cannot {action} an anomaly whose triage is {}.", s.as_str()))
                .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: &str) -> TriageRequest {
        TriageRequest { action: action.into(), assignee: None, disposition: None, note: None }
    }

    #[test]
    fn the_state_machine_allows_exactly_the_documented_transitions() {
        let open = Triage::default();
        let ack = open.apply(&Action::Acknowledge { note: None }, "a").unwrap();
        assert_eq!((ack.state, ack.version), (State::Acknowledged, 1));
        assert!(ack.apply(&Action::Acknowledge { note: None }, "a").is_err());
        let assigned = ack.apply(&Action::Assign { assignee: Some("bob".into()), note: None }, "a").unwrap();
        assert_eq!((assigned.state, assigned.assignee.as_deref()), (State::Acknowledged, Some("bob")));
        let closed = assigned.apply(&Action::Close { disposition: "false_positive".into(), note: None }, "a").unwrap();
        assert_eq!(
            (closed.state, closed.disposition.as_deref(), closed.version),
            (State::Closed, Some("false_positive"), 3)
        );
        for a in [
            Action::Acknowledge { note: None },
            Action::Assign { assignee: None, note: None },
            Action::Close { disposition: "benign".into(), note: None },
        ] {
            assert_eq!(closed.apply(&a, "a"), Err(Refusal::Transition { action: a.name(), state: State::Closed }));
        }
        let reopened = closed.apply(&Action::Reopen { note: Some("seen again".into()) }, "a").unwrap();
        assert_eq!((reopened.state, reopened.disposition.clone()), (State::Acknowledged, None));
        assert!(open.apply(&Action::Reopen { note: None }, "a").is_err());
        // Closing straight from open is allowed (a duplicate needs no acknowledgement first).
        assert_eq!(
            open.apply(&Action::Close { disposition: "duplicate".into(), note: None }, "a").unwrap().state,
            State::Closed
        );
    }

    #[test]
    fn bad_requests_name_every_field() {
        let fields = |r: TriageRequest| -> Vec<String> {
            match parse(r) {
                Err(p) => p.errors.iter().map(|e| e.field.clone()).collect(),
                Ok(a) => panic!("accepted {a:?}"),
            }
        };
        assert_eq!(fields(req("snooze")), vec!["action"]);
        assert_eq!(fields(req("close")), vec!["disposition"]);
        assert_eq!(fields(TriageRequest { disposition: Some("maybe".into()), ..req("close") }), vec!["disposition"]);
        assert_eq!(
            fields(TriageRequest {
                assignee: Some(" bob".into()),
                disposition: Some("benign".into()),
                ..req("assign")
            }),
            vec!["assignee", "disposition"]
        );
        assert_eq!(fields(TriageRequest { note: Some("x".repeat(2001)), ..req("acknowledge") }), vec!["note"]);
        assert!(parse(TriageRequest { assignee: None, ..req("assign") }).is_ok(), "unassign");
    }
}
