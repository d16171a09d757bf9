//! `GET /stats`: what the gateway has charged, as the tests and benchmarks count it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The gateway's counts over the charges within the key retention (rebuilt from the
/// journal on a restart), except `replays` and `outages`, counted since the process
/// started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Succeeded charges.
    pub charges: u64,
    /// Failed (declined) charges.
    pub declines: u64,
    /// Requests answered with the saved answer of their idempotency key.
    pub replays: u64,
    /// Requests refused by a simulated outage, before anything was done.
    pub outages: u64,
    /// Charges made whose answer was replaced by a simulated 502.
    pub lost_answers: u64,
    /// Idempotency keys with a saved answer.
    pub keys: u64,
    /// Distinct `metadata[order]` values with at least one succeeded charge.
    pub orders: u64,
    /// Over every order, its succeeded charges beyond the first.
    pub duplicate_charges: u64,
    /// The most succeeded charges made under one idempotency key.
    pub max_charges_per_key: u64,
    /// With `?detail=true`: succeeded charges by `metadata[order]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charges_per_order: Option<BTreeMap<String, u64>>,
    /// With `?detail=true`: succeeded charges by idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charges_per_key: Option<BTreeMap<String, u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_written_in_camel_case_with_detail_only_when_asked() {
        let stats = Stats { charges: 2, lost_answers: 1, duplicate_charges: 1, ..Stats::default() };
        assert_eq!(
            serde_json::to_value(&stats).unwrap(),
            serde_json::json!({
                "charges": 2, "declines": 0, "replays": 0, "outages": 0, "lostAnswers": 1, "keys": 0,
                "orders": 0, "duplicateCharges": 1, "maxChargesPerKey": 0,
            })
        );
        let detailed = Stats { charges_per_order: Some(BTreeMap::from([("o-1".into(), 2)])), ..stats };
        assert_eq!(serde_json::to_value(&detailed).unwrap()["chargesPerOrder"], serde_json::json!({ "o-1": 2 }));
    }
}
