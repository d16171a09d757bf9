//! The pipeline's events. Each type is one version of one event: its subject ends in
//! the version (`orders.created.v1`), and its JSON Schema is generated from the type
//! and checked in under `workers/schemas/`.
//!
//! A version only grows compatibly: new fields are optional, nothing is renamed or
//! removed, unknown fields are ignored. Every payload a released version published is
//! kept under `workers/schemas/samples/` and a test decodes them all with today's
//! types. An incompatible change is a new type on a new subject (`.v2`), published
//! beside the old one until no consumer reads the old one any more.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One version of one event.
pub trait Event: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static {
    /// The subject it is published on, version included.
    const SUBJECT: &'static str;

    /// The `Nats-Msg-Id` it is published with: the same for every attempt to publish
    /// the same fact, so JetStream stores it once.
    fn message_id(&self) -> String;
}

/// Why a payload is not an event this worker reads.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("subject {subject} carries no event this worker reads")]
    UnknownSubject { subject: String },
    #[error("payload on {subject} is not a valid event: {source}")]
    Invalid { subject: String, source: serde_json::Error },
}

/// How the consume loop turns a message into what a handler takes.
pub trait Decode: Sized + Send + 'static {
    fn decode(subject: &str, payload: &[u8]) -> Result<Self, DecodeError>;
}

impl<E: Event> Decode for E {
    fn decode(subject: &str, payload: &[u8]) -> Result<Self, DecodeError> {
        if subject != E::SUBJECT {
            return Err(DecodeError::UnknownSubject { subject: subject.to_owned() });
        }
        serde_json::from_slice(payload).map_err(|source| DecodeError::Invalid { subject: subject.to_owned(), source })
    }
}

/// An amount of money in the currency's minor unit (cents), never a float.
pub type Cents = u64;

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    /// Stock keeping unit: letters, digits, `-` and `_`, at most 64.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub sku: String,
    /// How many, at least 1.
    #[schemars(range(min = 1))]
    pub quantity: u32,
    /// Price of one, in the currency's minor unit.
    pub unit_price_cents: Cents,
}

/// An order intake accepted: published on `orders.created.v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderCreated {
    /// Letters, digits, `-` and `_`, at most 64; the key of everything that follows.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub order_id: String,
    #[schemars(length(min = 1, max = 64))]
    pub customer_id: String,
    #[schemars(length(min = 1, max = 100))]
    pub items: Vec<LineItem>,
    /// ISO 4217 code, such as `EUR`.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    /// The sum of the lines, in the currency's minor unit.
    pub total_cents: Cents,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub created_at: OffsetDateTime,
}

impl Event for OrderCreated {
    const SUBJECT: &'static str = "orders.created.v1";

    fn message_id(&self) -> String {
        format!("order-created-{}", self.order_id)
    }
}

/// The order's total was charged: published on `payments.completed.v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCompleted {
    pub order_id: String,
    /// The gateway's identifier of the charge.
    pub charge_id: String,
    pub amount_cents: Cents,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub charged_at: OffsetDateTime,
}

impl Event for PaymentCompleted {
    const SUBJECT: &'static str = "payments.completed.v1";

    fn message_id(&self) -> String {
        format!("payment-{}", self.order_id)
    }
}

/// The gateway declined the charge: published on `payments.failed.v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentFailed {
    pub order_id: String,
    /// The gateway's reason, for people.
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub failed_at: OffsetDateTime,
}

impl Event for PaymentFailed {
    const SUBJECT: &'static str = "payments.failed.v1";

    fn message_id(&self) -> String {
        // The same id as a completion: an order has one payment outcome.
        format!("payment-{}", self.order_id)
    }
}

/// One line's stock, as reserved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub sku: String,
    pub quantity: u32,
}

/// Stock was set aside for every line: published on `inventory.reserved.v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryReserved {
    pub order_id: String,
    pub items: Vec<Reservation>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub reserved_at: OffsetDateTime,
}

impl Event for InventoryReserved {
    const SUBJECT: &'static str = "inventory.reserved.v1";

    fn message_id(&self) -> String {
        format!("inventory-{}", self.order_id)
    }
}

/// A line could not be reserved, so none was: published on `inventory.rejected.v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryRejected {
    pub order_id: String,
    /// The first line that was short.
    pub sku: String,
    pub requested: u32,
    pub available: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub rejected_at: OffsetDateTime,
}

impl Event for InventoryRejected {
    const SUBJECT: &'static str = "inventory.rejected.v1";

    fn message_id(&self) -> String {
        format!("inventory-{}", self.order_id)
    }
}

/// Any event of the pipeline, as audit reads them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PipelineEvent {
    OrderCreated(OrderCreated),
    PaymentCompleted(PaymentCompleted),
    PaymentFailed(PaymentFailed),
    InventoryReserved(InventoryReserved),
    InventoryRejected(InventoryRejected),
}

impl Decode for PipelineEvent {
    fn decode(subject: &str, payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(match subject {
            OrderCreated::SUBJECT => Self::OrderCreated(Decode::decode(subject, payload)?),
            PaymentCompleted::SUBJECT => Self::PaymentCompleted(Decode::decode(subject, payload)?),
            PaymentFailed::SUBJECT => Self::PaymentFailed(Decode::decode(subject, payload)?),
            InventoryReserved::SUBJECT => Self::InventoryReserved(Decode::decode(subject, payload)?),
            InventoryRejected::SUBJECT => Self::InventoryRejected(Decode::decode(subject, payload)?),
            _ => return Err(DecodeError::UnknownSubject { subject: subject.to_owned() }),
        })
    }
}

/// Every event's subject and JSON Schema, in the order the files are written.
pub fn schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn one<E: Event>() -> (&'static str, serde_json::Value) {
        let mut schema = schemars::schema_for!(E).to_value();
        schema["$id"] = format!("https://jetway.dev/schemas/{}.json", E::SUBJECT).into();
        (E::SUBJECT, schema)
    }
    vec![
        one::<OrderCreated>(),
        one::<PaymentCompleted>(),
        one::<PaymentFailed>(),
        one::<InventoryReserved>(),
        one::<InventoryRejected>(),
    ]
}

/// `now`, to the millisecond, as events carry it.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(now)
}

/// An example order (two lines, 29.99 EUR) for documentation, tests and benchmarks.
pub fn sample_order(order_id: &str) -> OrderCreated {
    OrderCreated {
        order_id: order_id.into(),
        customer_id: "customer-1".into(),
        items: vec![
            LineItem { sku: "WIDGET".into(), quantity: 2, unit_price_cents: 1250 },
            LineItem { sku: "GADGET".into(), quantity: 1, unit_price_cents: 499 },
        ],
        currency: "EUR".into(),
        total_cents: 2999,
        created_at: now(),
    }
}
