use std::collections::HashMap;
use std::sync::Mutex;

use time::macros::datetime;

use super::*;
use crate::events::LineItem;
use crate::fixtures::{delivery, order};
use crate::publish::outbox::Outbox;

fn line(sku: &str, quantity: u32) -> Reservation {
    Reservation { sku: sku.into(), quantity }
}

#[test]
fn lines_of_one_sku_are_added_up() {
    let mut order = order("o-1");
    order.items.push(LineItem { sku: "WIDGET".into(), quantity: 3, unit_price_cents: 1250 });
    assert_eq!(wanted(&order), [line("GADGET", 1), line("WIDGET", 5)]);
}

#[test]
fn enough_of_every_line_reserves_them_all() {
    let at = datetime!(2026-11-24 08:00 UTC);
    let lines = [line("GADGET", 1), line("WIDGET", 5)];
    assert_eq!(decide(&lines, &[1, 9], at), Decision::Reserved { items: lines.to_vec(), at });
}

#[test]
fn the_first_short_line_rejects_the_order() {
    let at = datetime!(2026-11-24 08:00 UTC);
    let lines = [line("GADGET", 1), line("WIDGET", 5)];
    assert_eq!(
        decide(&lines, &[0, 4], at),
        Decision::Rejected { sku: "GADGET".into(), requested: 1, available: 0, at }
    );
}

/// Stock in memory, with the same all-or-nothing rule.
struct MemoryStock {
    available: Mutex<HashMap<String, u64>>,
    decisions: Mutex<HashMap<String, Decision>>,
}

impl Stock for MemoryStock {
    async fn reserve(&self, order_id: &str, lines: &[Reservation]) -> anyhow::Result<Decision> {
        let mut decisions = self.decisions.lock().unwrap();
        if let Some(taken) = decisions.get(order_id) {
            return Ok(taken.clone());
        }
        let mut available = self.available.lock().unwrap();
        let have: Vec<u64> = lines.iter().map(|line| available.get(&line.sku).copied().unwrap_or(0)).collect();
        let decision = decide(lines, &have, now());
        if let Decision::Reserved { items, .. } = &decision {
            for item in items {
                *available.get_mut(&item.sku).unwrap() -= u64::from(item.quantity);
            }
        }
        decisions.insert(order_id.into(), decision.clone());
        Ok(decision)
    }
}

#[tokio::test]
async fn a_redelivered_order_is_reserved_once_and_announced_again() {
    let stock = MemoryStock {
        available: Mutex::new(HashMap::from([("WIDGET".into(), 10), ("GADGET".into(), 10)])),
        decisions: Mutex::default(),
    };
    let inventory = Inventory { stock, publisher: Outbox::default() };
    assert_eq!(inventory.handle(order("o-1"), &delivery(1)).await, Outcome::Ack);
    assert_eq!(inventory.handle(order("o-1"), &delivery(2)).await, Outcome::Ack);
    assert_eq!(inventory.stock.available.lock().unwrap()["WIDGET"], 8);
    let published = inventory.publisher.published();
    assert_eq!(published, vec![("inventory.reserved.v1".into(), "inventory-o-1".into()); 2]);
}
