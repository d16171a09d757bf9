//! The pipeline's events. Each type is one version of one event: its subject starts
//! with the event's name and version (`orders.created.v1`) and ends in the order it is
//! about (`orders.created.v1.<customerId>.<orderId>`), and its JSON Schema is generated
//! from the type and checked in under `workers/schemas/`.
//!
//! An order has at most one event of each type, so every event is published only if
//! its subject holds none yet (`Nats-Expected-Last-Subject-Sequence: 0`): JetStream
//! itself keeps an order from being created, charged or announced twice, for as long
//! as the stream keeps the event, not only for its duplicate window.
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
    /// The event's name and version, the start of its subject.
    const SUBJECT: &'static str;

    /// The order the event is about.
    fn order(&self) -> OrderRef<'_>;

    /// The subject it is published on: the name, the version and the order.
    fn subject(&self) -> String {
        format!("{}.{}", Self::SUBJECT, self.order())
    }
}

/// An order as every step names it: the customer's id and the id the customer gave
/// it, so two customers' orders never collide. As text, `<customerId>.<orderId>`: two
/// subject tokens, and a key in the pipeline's KV buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderRef<'a> {
    pub customer_id: &'a str,
    pub order_id: &'a str,
}

impl std::fmt::Display for OrderRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.customer_id, self.order_id)
    }
}

/// Letters, digits, `-` and `_`, 1 to 64 of them: what one subject token and one KV
/// key token can carry. Customer ids, order ids and SKUs are identifiers.
pub fn is_identifier(value: &str) -> bool {
    (1..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The event name and version of a subject: its first three tokens
/// (`orders.created.v1.c-1.o-1` is an `orders.created.v1`).
pub fn event_subject(subject: &str) -> &str {
    subject.match_indices('.').nth(2).map_or(subject, |(dot, _)| &subject[..dot])
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
        if event_subject(subject) != E::SUBJECT {
            return Err(DecodeError::UnknownSubject { subject: subject.to_owned() });
        }
        serde_json::from_slice(payload).map_err(|source| DecodeError::Invalid { subject: subject.to_owned(), source })
    }
}

/// `impl Event` for an event type with `customer_id` and `order_id` fields, on `subject`.
macro_rules! event {
    ($type:ty, $subject:literal) => {
        impl Event for $type {
            const SUBJECT: &'static str = $subject;

            fn order(&self) -> OrderRef<'_> {
                OrderRef { customer_id: &self.customer_id, order_id: &self.order_id }
            }
        }
    };
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
    /// Letters, digits, `-` and `_`, at most 64: order ids are unique per customer.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
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

event!(OrderCreated, "orders.created.v1");

/// The order's total was charged: published on `payments.completed.v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentCompleted {
    pub order_id: String,
    /// The customer who placed the order (absent from events published before 0.2).
    #[serde(default)]
    pub customer_id: String,
    /// The gateway's identifier of the charge.
    pub charge_id: String,
    pub amount_cents: Cents,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub charged_at: OffsetDateTime,
}

event!(PaymentCompleted, "payments.completed.v1");

/// The gateway declined the charge: published on `payments.failed.v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentFailed {
    pub order_id: String,
    /// The customer who placed the order (absent from events published before 0.2).
    #[serde(default)]
    pub customer_id: String,
    /// The gateway's reason, for people.
    pub reason: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub failed_at: OffsetDateTime,
}

event!(PaymentFailed, "payments.failed.v1");

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
    /// The customer who placed the order (absent from events published before 0.2).
    #[serde(default)]
    pub customer_id: String,
    pub items: Vec<Reservation>,
    /// What payment charges for the order, in the currency's minor unit (absent from
    /// events published before 0.2, which payment did not read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_cents: Option<Cents>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub reserved_at: OffsetDateTime,
}

event!(InventoryReserved, "inventory.reserved.v1");

impl InventoryReserved {
    /// `order` reserved as `items` at `reserved_at`, with what payment charges for it.
    pub fn of(order: OrderCreated, items: Vec<Reservation>, reserved_at: OffsetDateTime) -> Self {
        let OrderCreated { order_id, customer_id, total_cents, currency, .. } = order;
        Self { order_id, customer_id, items, total_cents: Some(total_cents), currency: Some(currency), reserved_at }
    }
}

/// A line could not be reserved, so none was: published on `inventory.rejected.v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryRejected {
    pub order_id: String,
    /// The customer who placed the order (absent from events published before 0.2).
    #[serde(default)]
    pub customer_id: String,
    /// The first line that was short.
    pub sku: String,
    pub requested: u32,
    pub available: u64,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub rejected_at: OffsetDateTime,
}

event!(InventoryRejected, "inventory.rejected.v1");

/// The stock an order had reserved was put back, because its payment failed: published
/// on `inventory.released.v1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryReleased {
    pub order_id: String,
    pub customer_id: String,
    pub items: Vec<Reservation>,
    #[serde(with = "time::serde::rfc3339")]
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub released_at: OffsetDateTime,
}

event!(InventoryReleased, "inventory.released.v1");

/// Any event of the pipeline, as audit reads them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PipelineEvent {
    OrderCreated(OrderCreated),
    PaymentCompleted(PaymentCompleted),
    PaymentFailed(PaymentFailed),
    InventoryReserved(InventoryReserved),
    InventoryRejected(InventoryRejected),
    InventoryReleased(InventoryReleased),
}

impl Decode for PipelineEvent {
    fn decode(subject: &str, payload: &[u8]) -> Result<Self, DecodeError> {
        Ok(match event_subject(subject) {
            OrderCreated::SUBJECT => Self::OrderCreated(Decode::decode(subject, payload)?),
            PaymentCompleted::SUBJECT => Self::PaymentCompleted(Decode::decode(subject, payload)?),
            PaymentFailed::SUBJECT => Self::PaymentFailed(Decode::decode(subject, payload)?),
            InventoryReserved::SUBJECT => Self::InventoryReserved(Decode::decode(subject, payload)?),
            InventoryRejected::SUBJECT => Self::InventoryRejected(Decode::decode(subject, payload)?),
            InventoryReleased::SUBJECT => Self::InventoryReleased(Decode::decode(subject, payload)?),
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
        one::<InventoryReleased>(),
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
