//! What the gateway holds in memory (pure: no I/O, `now` is a parameter): the saved
//! answer of each idempotency key, the keys being processed, and the counts behind
//! `/stats`, all over the charges within the key retention.
//!
//! A charge leaves the book when it passes the retention, as it leaves the journal
//! on the next start, so the counts are the same whether the gateway restarted or
//! not, and its key may be used again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use time::OffsetDateTime;

use super::answer::Answer;
use super::journal::{ChargeStatus, Record, cutoff};
use super::params::ChargeParams;
use super::stats::Stats;

/// What an idempotency key's request may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The key is new and now held for this request: charge, then [`ChargeBook::add`]
    /// or [`ChargeBook::release`].
    New,
    /// The key's saved answer, for the same parameters.
    Replay(Answer),
    /// The key was used with other parameters.
    Mismatch,
    /// Another request holds the key.
    InFlight,
}

struct Saved {
    params: ChargeParams,
    answer: Answer,
    charge_id: String,
}

/// A charge within the retention, as counted.
struct Entry {
    at: OffsetDateTime,
    charge_id: String,
    key: Option<String>,
    order: Option<String>,
    status: ChargeStatus,
    lost_answer: bool,
}

pub struct ChargeBook {
    retention: Duration,
    saved: HashMap<String, Saved>,
    in_flight: HashSet<String>,
    /// Every charge within the retention, oldest first.
    window: VecDeque<Entry>,
    per_order: HashMap<String, u64>,
    per_key: HashMap<String, u64>,
    charges: u64,
    declines: u64,
    lost_answers: u64,
    duplicate_charges: u64,
    replays: u64,
    outages: u64,
}

impl ChargeBook {
    pub fn new(retention: Duration) -> Self {
        Self {
            retention,
            saved: HashMap::new(),
            in_flight: HashSet::new(),
            window: VecDeque::new(),
            per_order: HashMap::new(),
            per_key: HashMap::new(),
            charges: 0,
            declines: 0,
            lost_answers: 0,
            duplicate_charges: 0,
            replays: 0,
            outages: 0,
        }
    }

    /// Decides what a request with `key` and `params` may do at `now`.
    pub fn claim(&mut self, key: &str, params: &ChargeParams, now: OffsetDateTime) -> Claim {
        self.expire(now);
        if let Some(saved) = self.saved.get(key) {
            if saved.params != *params {
                return Claim::Mismatch;
            }
            self.replays += 1;
            return Claim::Replay(saved.answer.clone());
        }
        if self.in_flight.insert(key.to_owned()) { Claim::New } else { Claim::InFlight }
    }

    /// Lets go of a key claimed for a charge that was not made.
    pub fn release(&mut self, key: &str) {
        self.in_flight.remove(key);
    }

    /// Counts a charge made (or loaded from the journal) and saves its key's answer.
    pub fn add(&mut self, record: Record) {
        let order = record.params.order().map(str::to_owned);
        match record.status {
            ChargeStatus::Succeeded => {
                self.charges += 1;
                if let Some(order) = &order
                    && increment(&mut self.per_order, order) > 1
                {
                    self.duplicate_charges += 1;
                }
                if let Some(key) = &record.key {
                    increment(&mut self.per_key, key);
                }
            }
            ChargeStatus::Failed => self.declines += 1,
        }
        self.lost_answers += u64::from(record.lost_answer);
        if let Some(key) = &record.key {
            self.in_flight.remove(key);
            let saved = Saved { params: record.params, answer: record.answer, charge_id: record.charge_id.clone() };
            self.saved.insert(key.clone(), saved);
        }
        self.window.push_back(Entry {
            at: record.at,
            charge_id: record.charge_id,
            key: record.key,
            order,
            status: record.status,
            lost_answer: record.lost_answer,
        });
    }

    /// Counts a request refused by a simulated outage.
    pub fn count_outage(&mut self) {
        self.outages += 1;
    }

    /// The counts at `now`; `detail` adds the charges per order and per key.
    pub fn stats(&mut self, detail: bool, now: OffsetDateTime) -> Stats {
        self.expire(now);
        let sorted = |map: &HashMap<String, u64>| map.iter().map(|(name, count)| (name.clone(), *count)).collect();
        Stats {
            charges: self.charges,
            declines: self.declines,
            replays: self.replays,
            outages: self.outages,
            lost_answers: self.lost_answers,
            keys: self.saved.len() as u64,
            orders: self.per_order.len() as u64,
            duplicate_charges: self.duplicate_charges,
            max_charges_per_key: self.per_key.values().copied().max().unwrap_or(0),
            charges_per_order: detail.then(|| sorted(&self.per_order)),
            charges_per_key: detail.then(|| sorted(&self.per_key)),
        }
    }

    /// Forgets the charges made before the retention.
    fn expire(&mut self, now: OffsetDateTime) {
        let Some(cutoff) = cutoff(now, self.retention) else { return };
        while self.window.front().is_some_and(|entry| entry.at < cutoff) {
            let Some(entry) = self.window.pop_front() else { break };
            match entry.status {
                ChargeStatus::Succeeded => {
                    self.charges -= 1;
                    if let Some(order) = &entry.order
                        && decrement(&mut self.per_order, order) > 0
                    {
                        self.duplicate_charges -= 1;
                    }
                    if let Some(key) = &entry.key {
                        decrement(&mut self.per_key, key);
                    }
                }
                ChargeStatus::Failed => self.declines -= 1,
            }
            self.lost_answers -= u64::from(entry.lost_answer);
            if let Some(key) = &entry.key
                && self.saved.get(key).is_some_and(|saved| saved.charge_id == entry.charge_id)
            {
                self.saved.remove(key);
            }
        }
    }
}

/// Adds one to `name`'s count and returns the new count.
fn increment(counts: &mut HashMap<String, u64>, name: &str) -> u64 {
    let count = counts.entry(name.to_owned()).or_default();
    *count += 1;
    *count
}

/// Takes one from `name`'s count, forgetting it at zero, and returns what is left.
fn decrement(counts: &mut HashMap<String, u64>, name: &str) -> u64 {
    let Some(count) = counts.get_mut(name) else { return 0 };
    *count = count.saturating_sub(1);
    let left = *count;
    if left == 0 {
        counts.remove(name);
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn params(order: &str, amount: u64) -> ChargeParams {
        ChargeParams::parse(format!("amount={amount}&currency=eur&metadata[order]={order}").as_bytes()).unwrap()
    }

    fn record(key: Option<&str>, order: &str, status: ChargeStatus, at: OffsetDateTime) -> Record {
        let params = params(order, 100);
        let charge_id = format!("ch_{}", rand::random::<u64>());
        let answer = match status {
            ChargeStatus::Succeeded => Answer::charged(&charge_id, &params, at),
            ChargeStatus::Failed => Answer::declined(&charge_id),
        };
        Record { at, key: key.map(str::to_owned), charge_id, status, lost_answer: false, params, answer }
    }

    #[test]
    fn a_new_key_is_held_until_its_charge_is_added() {
        let mut book = ChargeBook::new(HOUR);
        assert_eq!(book.claim("k", &params("o-1", 100), now()), Claim::New);
        assert_eq!(book.claim("k", &params("o-1", 100), now()), Claim::InFlight);
        let added = record(Some("k"), "o-1", ChargeStatus::Succeeded, now());
        let answer = added.answer.clone();
        book.add(added);
        assert_eq!(book.claim("k", &params("o-1", 100), now()), Claim::Replay(answer));
        assert_eq!(book.stats(false, now()).replays, 1);
    }

    #[test]
    fn a_saved_key_refuses_other_parameters() {
        let mut book = ChargeBook::new(HOUR);
        book.add(record(Some("k"), "o-1", ChargeStatus::Succeeded, now()));
        assert_eq!(book.claim("k", &params("o-1", 200), now()), Claim::Mismatch);
        assert_eq!(book.claim("k", &params("o-2", 100), now()), Claim::Mismatch);
    }

    #[test]
    fn a_released_key_can_be_claimed_again() {
        let mut book = ChargeBook::new(HOUR);
        assert_eq!(book.claim("k", &params("o-1", 100), now()), Claim::New);
        book.release("k");
        assert_eq!(book.claim("k", &params("o-1", 100), now()), Claim::New);
    }

    #[test]
    fn charges_of_one_order_beyond_the_first_are_duplicates_and_declines_are_not_charges() {
        let mut book = ChargeBook::new(HOUR);
        book.add(record(None, "o-1", ChargeStatus::Succeeded, now()));
        book.add(record(None, "o-1", ChargeStatus::Succeeded, now()));
        book.add(record(Some("k2"), "o-2", ChargeStatus::Succeeded, now()));
        book.add(record(Some("k3"), "o-3", ChargeStatus::Failed, now()));
        let stats = book.stats(true, now());
        assert_eq!((stats.charges, stats.declines, stats.keys, stats.orders), (3, 1, 2, 2));
        assert_eq!((stats.duplicate_charges, stats.max_charges_per_key), (1, 1));
        assert_eq!(stats.charges_per_order.unwrap().get("o-1"), Some(&2));
        assert_eq!(stats.charges_per_key.unwrap().get("k3"), None, "a decline is no charge of its key");
    }

    #[test]
    fn charges_past_the_retention_leave_the_counts_and_free_their_key() {
        let mut book = ChargeBook::new(HOUR);
        book.add(record(Some("old"), "o-1", ChargeStatus::Succeeded, now() - HOUR * 2));
        book.add(record(None, "o-1", ChargeStatus::Succeeded, now() - HOUR * 2));
        book.add(record(Some("new"), "o-1", ChargeStatus::Succeeded, now()));
        let stats = book.stats(false, now());
        assert_eq!((stats.charges, stats.keys, stats.orders, stats.duplicate_charges), (1, 1, 1, 0));
        assert_eq!(book.claim("old", &params("o-9", 1), now()), Claim::New, "an expired key is new again");
    }
}
