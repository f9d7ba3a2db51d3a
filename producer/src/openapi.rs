//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/openapi.json`.

use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use vigil_common::openapi::{FieldErrorDoc, OpsApi, ProblemDoc};

use crate::routes::{Accepted, BatchResult, Created, ItemResult, VerdictDoc};

/// A transaction event. Unknown fields are rejected (422).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Transaction)]
#[allow(dead_code)]
pub struct TransactionDoc {
    /// UUID; generated when absent. With an `Idempotency-Key` header it must equal the id the
    /// key stands for (or be left out).
    #[schema(format = Uuid)]
    transaction_id: Option<String>,
    /// Event time, RFC 3339 (stored as UTC). At most MAX_FUTURE_SKEW ahead and MAX_EVENT_AGE old.
    #[schema(format = DateTime, example = "2025-12-14T12:00:00Z")]
    occurred_at: String,
    #[schema(pattern = "^(approved|denied|failed|reversed)$", example = "denied")]
    status: String,
    /// Issuer response code: 1 to 8 ASCII letters or digits.
    #[schema(pattern = "^[A-Za-z0-9]{1,8}$", example = "05")]
    auth_code: String,
    /// Amount in minor units (cents): 0 to MAX_AMOUNT_MINOR (default 100000000000).
    #[schema(minimum = 0, maximum = 100_000_000_000_i64, example = 1250)]
    amount_minor: i64,
    /// ISO 4217 alphabetic code, upper case.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
    /// 1 to 64 characters, no control characters, no surrounding whitespace.
    #[schema(min_length = 1, max_length = 64, example = "food")]
    category: String,
    /// 1 to 128 characters, no control characters, no surrounding whitespace.
    #[schema(min_length = 1, max_length = 128, example = "m-042")]
    merchant_id: String,
}

/// The body older clients send: status approved, auth code "00", currency USD unless given.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LegacyTransaction)]
#[allow(dead_code)]
pub struct LegacyTransactionDoc {
    /// Amount in minor units.
    #[schema(minimum = 0, maximum = 100_000_000_000_i64, example = 10000)]
    amount: i64,
    #[schema(min_length = 1, max_length = 64, example = "food")]
    category: String,
    #[schema(min_length = 1, max_length = 128, example = "Starbucks")]
    merchant: String,
    #[schema(format = DateTime, example = "2025-12-14T12:00:00Z")]
    transaction_date: String,
    #[schema(pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
    #[schema(format = Uuid)]
    transaction_id: Option<String>,
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("Required on the ingest routes when API_KEYS is set."))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vigil producer",
        description = "Validates transaction events and publishes them as Avro. A 2xx means the broker \
                       acknowledged the event (acks=all, idempotent producer); anything else means it is \
                       not accepted and may be retried with the same id."
    ),
    paths(crate::routes::ingest_one, crate::routes::ingest_batch, crate::routes::ingest_legacy, crate::lookup::get_transaction, crate::reversal::reverse),
    components(schemas(TransactionDoc, LegacyTransactionDoc, Accepted, Created, VerdictDoc, BatchResult, ItemResult, ProblemDoc, FieldErrorDoc,
        crate::lookup::TransactionView, crate::lookup::StoredTransaction, crate::lookup::NamedAnomaly, crate::lookup::LookupVerdict, crate::lookup::ReversalLink,
        crate::reversal::ReversalDoc, crate::reversal::ReversalAccepted)),
    modifiers(&Security),
    tags((name = "ingest", description = "Transaction events in"), (name = "transactions", description = "Stored transactions and their verdicts"))
)]
pub struct ApiDoc;

/// The whole document: ingest routes and the operational ones.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(OpsApi::openapi());
    doc
}
