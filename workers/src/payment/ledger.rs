//! The payment ledger: one entry per order, first the intent to charge, then the
//! outcome, each write conditional on the one before, so deliveries racing on an order
//! agree on one story.

use std::future::Future;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::events::Cents;

/// The KV bucket of the ledger.
pub const LEDGER_BUCKET: &str = "payments-ledger";

/// Where an order's payment stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum LedgerEntry {
    /// A charge is asked for under `idempotency_key`, first at `since`; its outcome is
    /// not known yet.
    #[serde(rename_all = "camelCase")]
    Pending {
        idempotency_key: String,
        #[serde(with = "time::serde::rfc3339")]
        since: OffsetDateTime,
    },
    #[serde(rename_all = "camelCase")]
    Charged {
        charge_id: String,
        amount_cents: Cents,
        currency: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// The gateway refused the charge: nothing was taken.
    #[serde(rename_all = "camelCase")]
    Declined {
        reason: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

/// An entry and the revision it was read at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub entry: LedgerEntry,
    pub revision: u64,
}

pub trait Ledger: Send + Sync + 'static {
    fn read(&self, order: &str) -> impl Future<Output = anyhow::Result<Option<Versioned>>> + Send;
    /// Writes `entry` if the order has none; `None` when it has one already.
    fn create(&self, order: &str, entry: &LedgerEntry) -> impl Future<Output = anyhow::Result<Option<u64>>> + Send;
    /// Replaces the entry read at `revision`; `None` when it changed since.
    fn replace(
        &self,
        order: &str,
        entry: &LedgerEntry,
        revision: u64,
    ) -> impl Future<Output = anyhow::Result<Option<u64>>> + Send;
}

impl Ledger for kv::Store {
    async fn read(&self, order: &str) -> anyhow::Result<Option<Versioned>> {
        match self.entry(order).await? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                Ok(Some(Versioned { entry: serde_json::from_slice(&entry.value)?, revision: entry.revision }))
            }
            _ => Ok(None),
        }
    }

    async fn create(&self, order: &str, entry: &LedgerEntry) -> anyhow::Result<Option<u64>> {
        match kv::Store::create(self, order, serde_json::to_vec(entry)?.into()).await {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn replace(&self, order: &str, entry: &LedgerEntry, revision: u64) -> anyhow::Result<Option<u64>> {
        match self.update(order, serde_json::to_vec(entry)?.into(), revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}
