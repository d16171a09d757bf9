use std::collections::HashMap;
use std::sync::Mutex;

use time::macros::datetime;

use super::*;
use crate::events::{LineItem, PaymentFailed, now};
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

impl MemoryStock {
    fn with(stock: &[(&str, u64)]) -> Self {
        let available = stock.iter().map(|(sku, quantity)| ((*sku).to_owned(), *quantity)).collect();
        Self { available: Mutex::new(available), decisions: Mutex::default() }
    }
}

impl Stock for MemoryStock {
    async fn reserve(&self, order: &str, lines: &[Reservation]) -> anyhow::Result<Decision> {
        let mut decisions = self.decisions.lock().unwrap();
        if let Some(taken) = decisions.get(order) {
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
        decisions.insert(order.into(), decision.clone());
        Ok(decision)
    }

    async fn release(&self, order: &str) -> anyhow::Result<Option<Decision>> {
        let mut decisions = self.decisions.lock().unwrap();
        let Some(Decision::Reserved { items, .. }) = decisions.get(order).cloned() else {
            return Ok(decisions.get(order).cloned());
        };
        let mut available = self.available.lock().unwrap();
        for item in &items {
            *available.get_mut(&item.sku).unwrap() += u64::from(item.quantity);
        }
        let released = Decision::Released { items, at: now() };
        decisions.insert(order.into(), released.clone());
        Ok(Some(released))
    }
}

fn inventory(stock: &[(&str, u64)]) -> Inventory<MemoryStock, Outbox> {
    Inventory { stock: MemoryStock::with(stock), publisher: Outbox::default() }
}

fn payment_failed(order_id: &str) -> Input {
    let order = order(order_id);
    Input::PaymentFailed(PaymentFailed {
        order_id: order.order_id,
        customer_id: order.customer_id,
        reason: "card_declined".into(),
        failed_at: now(),
    })
}

#[tokio::test]
async fn a_redelivered_order_is_reserved_once_and_announced_once() {
    let inventory = inventory(&[("WIDGET", 10), ("GADGET", 10)]);
    assert_eq!(inventory.handle(Input::Order(order("o-1")), &delivery(1)).await, Outcome::Ack);
    assert_eq!(inventory.handle(Input::Order(order("o-1")), &delivery(2)).await, Outcome::Ack);
    assert_eq!(inventory.stock.available.lock().unwrap()["WIDGET"], 8);
    assert_eq!(inventory.publisher.published(), ["inventory.reserved.v1.customer-1.o-1"]);
    let events = inventory.publisher.events.lock().unwrap();
    assert_eq!((events[0].1["totalCents"].as_u64(), events[0].1["currency"].as_str()), (Some(2999), Some("EUR")));
}

#[tokio::test]
async fn a_failed_payment_gives_the_stock_back_once() {
    let inventory = inventory(&[("WIDGET", 10), ("GADGET", 10)]);
    inventory.handle(Input::Order(order("o-1")), &delivery(1)).await;
    for delivered in [1, 2] {
        assert_eq!(inventory.handle(payment_failed("o-1"), &delivery(delivered)).await, Outcome::Ack);
    }
    assert_eq!(inventory.stock.available.lock().unwrap()["WIDGET"], 10, "released once");
    let published = inventory.publisher.published();
    assert_eq!(published, ["inventory.reserved.v1.customer-1.o-1", "inventory.released.v1.customer-1.o-1"]);
    // The order delivered again after its release reserves nothing again.
    assert_eq!(inventory.handle(Input::Order(order("o-1")), &delivery(3)).await, Outcome::Ack);
    assert_eq!(inventory.stock.available.lock().unwrap()["WIDGET"], 10);
}

#[tokio::test]
async fn a_rejected_order_holds_nothing_to_release() {
    let inventory = inventory(&[("WIDGET", 1), ("GADGET", 1)]);
    inventory.handle(Input::Order(order("o-1")), &delivery(1)).await;
    assert_eq!(inventory.handle(payment_failed("o-1"), &delivery(1)).await, Outcome::Ack);
    assert_eq!(inventory.stock.available.lock().unwrap()["WIDGET"], 1);
    assert_eq!(inventory.publisher.published(), ["inventory.rejected.v1.customer-1.o-1"]);
}
