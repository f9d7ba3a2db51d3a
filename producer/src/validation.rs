//! Every rule an incoming transaction must pass, with the field at fault named.
//!
//! Unknown fields are **rejected** (422): a payment client that misspells `amount_minor` as
//! `amount` must hear about it rather than have an event silently accepted without its amount.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;
use vigil_common::problem::FieldError;
use vigil_schemas::{Transaction, TransactionStatus};

/// Namespace for turning an arbitrary Idempotency-Key into a UUID (UUIDv5), so the same key
/// always yields the same transaction_id.
pub const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a54_9e0b_4f7e_9b1a_7c3e_5d2f_8a10);

pub const MAX_CATEGORY_LEN: usize = 64;
pub const MAX_MERCHANT_LEN: usize = 128;
pub const MAX_AUTH_CODE_LEN: usize = 8;
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Configurable limits.
#[derive(Debug, Clone)]
pub struct Rules {
    pub max_amount_minor: i64,
    pub max_future_skew: Duration,
    pub max_event_age: Duration,
}

const FIELDS: [&str; 8] =
    ["transaction_id", "occurred_at", "status", "auth_code", "amount_minor", "currency", "category", "merchant_id"];

/// The id a client's Idempotency-Key stands for: the key itself when it is a UUID, else its
/// UUIDv5. `index` distinguishes the items of one batch.
pub fn id_from_key(key: &str, index: Option<usize>) -> Uuid {
    match (Uuid::parse_str(key), index) {
        (Ok(u), None) => u,
        (_, None) => Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, key.as_bytes()),
        (_, Some(i)) => Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, format!("{key}#{i}").as_bytes()),
    }
}

/// Checks an Idempotency-Key header value.
pub fn check_idempotency_key(key: &str) -> Result<(), FieldError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(FieldError {
            field: "Idempotency-Key".into(),
            message: format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        });
    }
    Ok(())
}

/// Validates one event object. `key_id` is the id derived from an Idempotency-Key, if any.
pub fn validate(
    value: &Value,
    rules: &Rules,
    now: DateTime<Utc>,
    key_id: Option<Uuid>,
) -> Result<Transaction, Vec<FieldError>> {
    let mut errs = Vec::new();
    let Some(obj) = value.as_object() else {
        return Err(vec![fe("", "must be a JSON object")]);
    };
    for k in obj.keys() {
        if !FIELDS.contains(&k.as_str()) {
            errs.push(fe(k, "is not a known field"));
        }
    }

    let transaction_id = match (obj.get("transaction_id"), key_id) {
        (None | Some(Value::Null), Some(k)) => k,
        (None | Some(Value::Null), None) => Uuid::new_v4(),
        (Some(Value::String(s)), key) => match Uuid::parse_str(s) {
            Ok(u) if key.is_some_and(|k| k != u) => {
                errs.push(fe("transaction_id", "differs from the id given by the Idempotency-Key header"));
                u
            }
            Ok(u) => u,
            Err(_) => {
                errs.push(fe("transaction_id", "must be a UUID"));
                Uuid::nil()
            }
        },
        (Some(_), _) => {
            errs.push(fe("transaction_id", "must be a UUID string"));
            Uuid::nil()
        }
    };

    let occurred_at = match required_str(obj, "occurred_at", &mut errs) {
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => {
                let t = t.with_timezone(&Utc);
                let skew = chrono::Duration::from_std(rules.max_future_skew).unwrap_or_default();
                let age = chrono::Duration::from_std(rules.max_event_age).unwrap_or_default();
                if t > now + skew {
                    errs.push(fe(
                        "occurred_at",
                        &format!("is more than {} in the future", human(rules.max_future_skew)),
                    ));
                } else if t < now - age {
                    errs.push(fe("occurred_at", &format!("is more than {} in the past", human(rules.max_event_age))));
                }
                t.timestamp_millis()
            }
            Err(_) => {
                errs.push(fe("occurred_at", "must be an RFC 3339 timestamp such as 2025-12-14T12:00:00Z"));
                0
            }
        },
        None => 0,
    };

    let status = match required_str(obj, "status", &mut errs) {
        Some(s) => TransactionStatus::parse(s).unwrap_or_else(|| {
            errs.push(fe("status", "must be one of approved, denied, failed, reversed"));
            TransactionStatus::Approved
        }),
        None => TransactionStatus::Approved,
    };

    let auth_code = required_str(obj, "auth_code", &mut errs).unwrap_or_default().to_owned();
    if obj.contains_key("auth_code")
        && !auth_code.is_empty()
        && (auth_code.len() > MAX_AUTH_CODE_LEN || !auth_code.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        errs.push(fe("auth_code", &format!("must be 1 to {MAX_AUTH_CODE_LEN} ASCII letters or digits")));
    }

    let amount_minor = match obj.get("amount_minor") {
        None | Some(Value::Null) => {
            errs.push(fe("amount_minor", "is required"));
            0
        }
        Some(Value::Number(n)) => match n.as_i64() {
            Some(a) if a < 0 => {
                errs.push(fe("amount_minor", "must not be negative"));
                a
            }
            Some(a) if a > rules.max_amount_minor => {
                errs.push(fe("amount_minor", &format!("must not exceed {}", rules.max_amount_minor)));
                a
            }
            Some(a) => a,
            None => {
                errs.push(fe("amount_minor", "must be an integer number of minor units"));
                0
            }
        },
        Some(_) => {
            errs.push(fe("amount_minor", "must be an integer number of minor units"));
            0
        }
    };

    let currency = required_str(obj, "currency", &mut errs).unwrap_or_default().to_owned();
    if obj.contains_key("currency") && !currency.is_empty() && iso_currency::Currency::from_code(&currency).is_none() {
        errs.push(fe("currency", "must be an ISO 4217 alphabetic code such as EUR or USD (upper case)"));
    }

    let category = bounded_str(obj, "category", MAX_CATEGORY_LEN, &mut errs);
    let merchant_id = bounded_str(obj, "merchant_id", MAX_MERCHANT_LEN, &mut errs);

    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Transaction {
        transaction_id: transaction_id.hyphenated().to_string(),
        occurred_at,
        status,
        auth_code,
        amount_minor,
        currency,
        category,
        merchant_id,
        received_at: now.timestamp_millis(),
    })
}

/// Maps the older clients' body (`amount`, `category`, `merchant`, `transaction_date`) onto
/// the current event: status approved, auth code "00", currency `default_currency` unless given.
pub fn from_legacy(value: &Value, default_currency: &str) -> Result<Value, Vec<FieldError>> {
    const LEGACY: [&str; 6] = ["amount", "category", "merchant", "transaction_date", "currency", "transaction_id"];
    let Some(obj) = value.as_object() else {
        return Err(vec![fe("", "must be a JSON object")]);
    };
    let unknown: Vec<FieldError> =
        obj.keys().filter(|k| !LEGACY.contains(&k.as_str())).map(|k| fe(k, "is not a known field")).collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let mut out = Map::new();
    let rename = [
        ("amount", "amount_minor"),
        ("category", "category"),
        ("merchant", "merchant_id"),
        ("transaction_date", "occurred_at"),
        ("transaction_id", "transaction_id"),
    ];
    for (from, to) in rename {
        if let Some(v) = obj.get(from) {
            out.insert(to.into(), v.clone());
        }
    }
    out.insert("status".into(), Value::from("approved"));
    out.insert("auth_code".into(), Value::from("00"));
    out.insert("currency".into(), obj.get("currency").cloned().unwrap_or_else(|| Value::from(default_currency)));
    Ok(Value::Object(out))
}

/// Renames current field names back to the legacy ones in errors of the compatibility route.
pub fn legacy_field_names(mut errs: Vec<FieldError>) -> Vec<FieldError> {
    for e in &mut errs {
        e.field = match e.field.as_str() {
            "amount_minor" => "amount".into(),
            "merchant_id" => "merchant".into(),
            "occurred_at" => "transaction_date".into(),
            other => other.into(),
        };
    }
    errs
}

fn required_str<'a>(obj: &'a Map<String, Value>, field: &str, errs: &mut Vec<FieldError>) -> Option<&'a str> {
    match obj.get(field) {
        None | Some(Value::Null) => {
            errs.push(fe(field, "is required"));
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            errs.push(fe(field, "must not be empty"));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errs.push(fe(field, "must be a string"));
            None
        }
    }
}

fn bounded_str(obj: &Map<String, Value>, field: &str, max: usize, errs: &mut Vec<FieldError>) -> String {
    let s = required_str(obj, field, errs).unwrap_or_default();
    if s.chars().count() > max {
        errs.push(fe(field, &format!("must be at most {max} characters")));
    } else if s.chars().any(char::is_control) {
        errs.push(fe(field, "must not contain control characters"));
    } else if !s.is_empty() && s.trim() != s {
        errs.push(fe(field, "must not start or end with whitespace"));
    }
    s.to_owned()
}

fn fe(field: &str, message: &str) -> FieldError {
    FieldError { field: field.to_owned(), message: message.to_owned() }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 && s > 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{} hours", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> Rules {
        Rules {
            max_amount_minor: 1_000_000,
            max_future_skew: Duration::from_secs(300),
            max_event_age: Duration::from_secs(7 * 86_400),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-12-14T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    fn good() -> Value {
        json!({
            "occurred_at": "2025-12-14T11:59:00+01:00",
            "status": "denied",
            "auth_code": "05",
            "amount_minor": 1234,
            "currency": "EUR",
            "category": "food",
            "merchant_id": "m-1"
        })
    }

    fn fields(r: Result<Transaction, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_good_event_is_stored_in_utc_with_a_generated_uuid() {
        let tx = validate(&good(), &rules(), now(), None).unwrap();
        assert_eq!(tx.occurred_at, DateTime::parse_from_rfc3339("2025-12-14T10:59:00Z").unwrap().timestamp_millis());
        assert!(Uuid::parse_str(&tx.transaction_id).is_ok());
        assert_eq!(tx.status, TransactionStatus::Denied);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(&str, Value)> = vec![
            ("transaction_id", json!("not-a-uuid")),
            ("occurred_at", json!("yesterday")),
            ("occurred_at", json!("2025-12-14T13:00:00Z")),
            ("occurred_at", json!("2025-11-01T00:00:00Z")),
            ("status", json!("pending")),
            ("auth_code", json!("0 5")),
            ("auth_code", json!("123456789")),
            ("amount_minor", json!(-1)),
            ("amount_minor", json!(10.5)),
            ("amount_minor", json!("10")),
            ("amount_minor", json!(1_000_001)),
            ("currency", json!("XXY")),
            ("currency", json!("eur")),
            ("category", json!("x".repeat(65))),
            ("category", json!("")),
            ("merchant_id", json!(42)),
            ("merchant_id", json!("m\u{0}1")),
        ];
        for (field, bad) in cases {
            let mut v = good();
            v[field] = bad.clone();
            assert_eq!(fields(validate(&v, &rules(), now(), None)), vec![field.to_string()], "{field} = {bad}");
        }
    }

    #[test]
    fn missing_and_unknown_fields_are_named() {
        let mut v = good();
        v.as_object_mut().unwrap().remove("currency");
        v["amount"] = json!(5);
        let mut f = fields(validate(&v, &rules(), now(), None));
        f.sort();
        assert_eq!(f, vec!["amount", "currency"]);
    }

    #[test]
    fn the_idempotency_key_decides_the_id_and_must_agree_with_the_body() {
        let k = id_from_key("order-42", None);
        assert_eq!(k, id_from_key("order-42", None));
        assert_ne!(id_from_key("order-42", Some(0)), id_from_key("order-42", Some(1)));
        let tx = validate(&good(), &rules(), now(), Some(k)).unwrap();
        assert_eq!(tx.transaction_id, k.to_string());
        let mut v = good();
        v["transaction_id"] = json!(Uuid::new_v4().to_string());
        assert_eq!(fields(validate(&v, &rules(), now(), Some(k))), vec!["transaction_id"]);
    }

    #[test]
    fn legacy_bodies_map_onto_the_event() {
        let legacy = json!({"amount": 10000, "category": "food", "merchant": "Starbucks", "transaction_date": "2025-12-14T11:00:00Z"});
        let v = from_legacy(&legacy, "USD").unwrap();
        let tx = validate(&v, &rules(), now(), None).unwrap();
        assert_eq!(
            (tx.amount_minor, tx.status, tx.auth_code.as_str(), tx.currency.as_str()),
            (10000, TransactionStatus::Approved, "00", "USD")
        );
        assert_eq!(tx.merchant_id, "Starbucks");
        let bad =
            json!({"amount": -1, "category": "food", "merchant": "S", "transaction_date": "2025-12-14T11:00:00Z"});
        let errs = legacy_field_names(validate(&from_legacy(&bad, "USD").unwrap(), &rules(), now(), None).unwrap_err());
        assert_eq!(errs[0].field, "amount");
    }
}
