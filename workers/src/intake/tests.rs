use super::*;

fn invalid(body: serde_json::Value) -> Invalid {
    validate(body.to_string().as_bytes()).expect_err("the order is invalid")
}

fn good() -> serde_json::Value {
    serde_json::json!({
        "orderId": "o-1",
        "customerId": "c-1",
        "currency": "EUR",
        "items": [{ "sku": "WIDGET", "quantity": 2, "unitPriceCents": 1250 }, { "sku": "GADGET", "quantity": 1, "unitPriceCents": 499 }]
    })
}

#[test]
fn a_valid_order_gets_its_total() {
    let order = validate(good().to_string().as_bytes()).unwrap();
    assert_eq!((order.order_id.as_str(), order.total_cents), ("o-1", 2999));
}

#[test]
fn an_order_without_an_id_is_refused_naming_the_field() {
    let mut body = good();
    body.as_object_mut().unwrap().remove("orderId");
    let invalid = invalid(body);
    assert_eq!(invalid.field, "orderId");
    assert!(invalid.error.contains("required"), "{invalid:?}");
}

#[test]
fn only_json_bodies_are_read() {
    let headers = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
        headers
    };
    assert!(is_json(&headers("application/json")));
    assert!(is_json(&headers("Application/JSON; charset=utf-8")));
    assert!(!is_json(&headers("text/plain")));
    assert!(!is_json(&headers("application/x-www-form-urlencoded")));
    assert!(!is_json(&HeaderMap::new()));
}

#[test]
fn each_bad_field_is_named() {
    let cases = [
        (serde_json::json!({ "items": [{ "sku": "A", "quantity": 0, "unitPriceCents": 1 }] }), "items[0].quantity"),
        (serde_json::json!({ "items": [{ "sku": "A B", "quantity": 1, "unitPriceCents": 1 }] }), "items[0].sku"),
        (serde_json::json!({ "items": [{ "sku": "A", "quantity": "two", "unitPriceCents": 1 }] }), "items[0].quantity"),
        (
            serde_json::json!({ "items": [{ "sku": "A", "quantity": 1, "unitPriceCents": -1 }] }),
            "items[0].unitPriceCents",
        ),
        (serde_json::json!({ "items": [] }), "items"),
        (serde_json::json!({ "currency": "euro" }), "currency"),
        (serde_json::json!({ "customerId": "" }), "customerId"),
        (serde_json::json!({ "customerId": "c.1" }), "customerId"),
        (serde_json::json!({ "orderId": "a/b" }), "orderId"),
        (serde_json::json!({ "coupon": "FREE" }), "coupon"),
    ];
    for (change, field) in cases {
        let mut body = good();
        for (key, value) in change.as_object().unwrap() {
            body[key] = value.clone();
        }
        let invalid = invalid(body.clone());
        assert_eq!(invalid.field, field, "{body}: {invalid:?}");
        assert!(!invalid.error.is_empty());
    }
}

#[test]
fn a_missing_field_is_named_in_the_error() {
    let mut body = good();
    body.as_object_mut().unwrap().remove("currency");
    assert!(invalid(body).error.contains("currency"));
}

#[test]
fn a_total_that_overflows_is_refused() {
    let mut body = good();
    body["items"] = serde_json::json!([{ "sku": "A", "quantity": 10000, "unitPriceCents": u64::MAX / 2 }]);
    assert_eq!(invalid(body).field, "items[0].unitPriceCents");
}

#[test]
fn a_body_that_is_not_json_is_refused() {
    assert!(validate(b"orders please").is_err());
}
