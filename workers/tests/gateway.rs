//! The payment gateway simulator as its own process: idempotency keys charge once,
//! across concurrent requests and SIGKILLs, and every charge is counted at the gateway.

mod support;

use std::io::Write;

use support::gateway::{FORM, Gateway};
use support::http_request;

const ORDER_1: &str = "amount=2999&currency=EUR&description=Order+o-1&metadata[order]=o-1";

#[tokio::test]
async fn the_same_key_twice_charges_once_and_the_second_answer_is_the_replay() {
    let gateway = Gateway::start(&[]).await;

    let first = gateway.charge(Some("order-o-1"), ORDER_1).await;
    let second = gateway.charge(Some("order-o-1"), ORDER_1).await;

    assert_eq!(first.status, 200, "{}", first.body);
    assert!(!first.replayed);
    let charge = first.json();
    assert_eq!(charge["object"], "charge");
    assert_eq!(charge["amount"], 2999);
    assert_eq!(charge["currency"], "eur");
    assert_eq!(charge["status"], "succeeded");
    assert_eq!(charge["paid"], true);
    assert_eq!(charge["metadata"]["order"], "o-1");
    assert_eq!(charge["description"], "Order o-1");
    let id = charge["id"].as_str().unwrap();
    assert!(id.starts_with("ch_") && id.len() == 27, "{id}");
    assert!(charge["created"].as_i64().unwrap() > 1_700_000_000);

    assert_eq!((second.status, second.replayed), (200, true));
    assert_eq!(second.body, first.body, "replayed byte for byte");
    let stats = gateway.stats().await;
    assert_eq!((stats.charges, stats.replays, stats.keys, stats.orders), (1, 1, 1, 1));
    assert_eq!((stats.duplicate_charges, stats.max_charges_per_key), (0, 1));
}

#[tokio::test]
async fn a_used_key_with_another_amount_is_refused_as_an_idempotency_error() {
    let gateway = Gateway::start(&[]).await;
    assert_eq!(gateway.charge(Some("k"), ORDER_1).await.status, 200);

    let other = gateway.charge(Some("k"), "amount=1000&currency=eur&description=Order+o-1&metadata[order]=o-1").await;

    assert_eq!(other.status, 400);
    assert_eq!(other.json()["error"]["type"], "idempotency_error");
    assert!(!other.replayed);
    assert_eq!(gateway.stats().await.charges, 1);
}

#[tokio::test]
async fn requests_without_a_key_each_charge_and_count_as_duplicates_of_their_order() {
    let gateway = Gateway::start(&[]).await;

    let first = gateway.charge(None, ORDER_1).await;
    let second = gateway.charge(None, ORDER_1).await;

    assert_eq!((first.status, second.status), (200, 200));
    assert_ne!(first.json()["id"], second.json()["id"]);
    let stats = gateway.stats().await;
    assert_eq!((stats.charges, stats.keys, stats.orders, stats.duplicate_charges), (2, 0, 1, 1));
    assert_eq!(stats.charges_per_order.unwrap()["o-1"], 2);
}

#[tokio::test]
async fn bad_parameters_are_named_and_nothing_is_saved() {
    let gateway = Gateway::start(&[]).await;

    let missing = gateway.charge(Some("k"), "currency=eur").await;
    let bad_currency = gateway.charge(Some("k"), "amount=100&currency=euro").await;

    assert_eq!(missing.status, 400);
    assert_eq!(missing.json()["error"]["type"], "invalid_request_error");
    assert_eq!(missing.json()["error"]["param"], "amount");
    assert_eq!(bad_currency.json()["error"]["param"], "currency");
    assert_eq!(gateway.charge(Some("k"), ORDER_1).await.status, 200, "the key was not used up");
    let stats = gateway.stats().await;
    assert_eq!((stats.charges, stats.keys), (1, 1));
}

#[tokio::test]
async fn a_declined_charge_is_replayed_as_the_same_decline() {
    let gateway = Gateway::start(&["--decline-rate", "1"]).await;

    let first = gateway.charge(Some("k"), ORDER_1).await;
    let second = gateway.charge(Some("k"), ORDER_1).await;

    assert_eq!(first.status, 402);
    let error = first.json()["error"].clone();
    assert_eq!(error["type"], "card_error");
    assert_eq!(error["code"], "card_declined");
    assert_eq!(error["decline_code"], "generic_decline");
    assert!(error["charge"].as_str().unwrap().starts_with("ch_"));
    assert_eq!((second.status, second.replayed), (402, true));
    assert_eq!(second.body, first.body);
    let stats = gateway.stats().await;
    assert_eq!((stats.charges, stats.declines, stats.keys, stats.orders), (0, 1, 1, 0));
}

#[tokio::test]
async fn concurrent_requests_with_one_key_get_one_charge_and_conflicts() {
    let gateway = Gateway::start(&["--latency", "300ms"]).await;

    let answers = futures::future::join_all((0..5).map(|_| gateway.charge(Some("k"), ORDER_1))).await;

    let statuses: Vec<u16> = answers.iter().map(|answer| answer.status).collect();
    assert_eq!(statuses.iter().filter(|status| **status == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == 409).count(), 4, "{statuses:?}");
    let conflict = answers.iter().find(|answer| answer.status == 409).unwrap().json();
    assert_eq!(conflict["error"]["type"], "idempotency_error");
    assert_eq!(conflict["error"]["code"], "idempotency_key_in_use");
    let stats = gateway.stats().await;
    assert_eq!((stats.charges, stats.keys), (1, 1));
}

#[tokio::test]
async fn a_killed_gateway_restarted_on_its_state_replays_the_key_and_counts_the_first_charge() {
    let mut gateway = Gateway::start(&[]).await;
    let first = gateway.charge(Some("k"), ORDER_1).await;
    assert_eq!(first.status, 200);
    assert_eq!(gateway.charge(None, "amount=5&currency=usd&metadata[order]=o-2").await.status, 200);

    gateway.kill().await;
    // As if the gateway had been killed in the middle of a line.
    let mut journal = std::fs::OpenOptions::new().append(true).open(gateway.journal()).unwrap();
    journal.write_all(br#"{"at":"2026-01-01T00:00:00Z","charg"#).unwrap();
    gateway.start_again(&[]).await;
    let again = gateway.charge(Some("k"), ORDER_1).await;

    assert_eq!((again.status, again.replayed), (200, true));
    assert_eq!(again.body, first.body);
    let stats = gateway.stats().await;
    assert_eq!((stats.charges, stats.keys, stats.orders, stats.replays), (2, 1, 2, 1));
}

#[tokio::test]
async fn a_lost_answer_is_charged_and_its_retry_replays_the_charge() {
    let mut gateway = Gateway::start(&["--lost-answer-rate", "1"]).await;

    let lost = gateway.charge(Some("k"), ORDER_1).await;
    assert_eq!(lost.status, 502);
    assert_eq!(lost.json()["error"]["type"], "api_error");
    gateway.kill().await;
    gateway.start_again(&[]).await;
    let retry = gateway.charge(Some("k"), ORDER_1).await;

    assert_eq!((retry.status, retry.replayed), (200, true));
    assert_eq!(retry.json()["status"], "succeeded");
    let stats = gateway.stats().await;
    assert_eq!((stats.charges, stats.lost_answers, stats.replays), (1, 1, 1));
}

#[tokio::test]
async fn an_outage_charges_nothing_so_the_retry_charges() {
    let mut gateway = Gateway::start(&["--failure-rate", "1"]).await;

    let outage = gateway.charge(Some("k"), ORDER_1).await;
    assert_eq!(outage.status, 503);
    assert_eq!(outage.json()["error"]["message"], "simulated outage");
    let stats = gateway.stats().await;
    assert_eq!((stats.charges, stats.keys, stats.outages), (0, 0, 1));
    gateway.kill().await;
    gateway.start_again(&[]).await;

    let retry = gateway.charge(Some("k"), ORDER_1).await;
    assert_eq!((retry.status, retry.replayed), (200, false));
}

#[tokio::test]
async fn the_api_key_is_required_on_the_api_only() {
    let gateway = Gateway::start(&["--api-key", "sk_test_jetway"]).await;
    let charges = format!("{}/v1/charges", gateway.url());

    let (status, body) = http_request("POST", &charges, &[FORM], ORDER_1).await.unwrap();
    assert_eq!(status, 401);
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["message"], "Invalid API Key provided");
    let wrong = [FORM, ("authorization", "Bearer sk_test_other")];
    assert_eq!(http_request("POST", &charges, &wrong, ORDER_1).await.unwrap().0, 401);

    let right = [FORM, ("authorization", "Bearer sk_test_jetway")];
    assert_eq!(http_request("POST", &charges, &right, ORDER_1).await.unwrap().0, 200);
    assert_eq!(gateway.stats().await.charges, 1, "/stats needs no key");
}
