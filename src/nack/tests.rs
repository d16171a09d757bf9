use serde_json::json;

use super::*;

fn one(document: Value) -> Converted {
    convert(vec![document])
}

#[test]
fn a_nack_stream_keeps_its_spec_and_names_its_account_as_connection() {
    let converted = one(json!({
        "apiVersion": "jetstream.nats.io/v1beta2",
        "kind": "Stream",
        "metadata": { "name": "orders", "uid": "x", "resourceVersion": "1" },
        "spec": { "name": "ORDERS", "subjects": ["orders.>"], "storage": "file", "maxAge": "1h", "account": "shop", "preventDelete": true }
    }));
    assert_eq!(
        converted.documents,
        [json!({
            "apiVersion": "jetway.dev/v1alpha1",
            "kind": "Stream",
            "metadata": { "name": "orders" },
            "spec": { "name": "ORDERS", "subjects": ["orders.>"], "storage": "file", "maxAge": "1h", "connectionRef": { "name": "shop" } }
        })]
    );
    assert!(converted.notes.is_empty(), "{:?}", converted.notes);
}

#[test]
fn nack_schema_defaults_are_written_out() {
    let stream = one(
        json!({ "apiVersion": "jetstream.nats.io/v1beta2", "kind": "Stream", "metadata": { "name": "s" }, "spec": { "name": "S" } }),
    );
    assert_eq!(stream.documents[0]["spec"]["storage"], "memory");
    assert!(
        stream.notes.iter().any(|n| n.contains("Retain")),
        "NACK deleted streams with their object: {:?}",
        stream.notes
    );
    let consumer = one(
        json!({ "apiVersion": "jetstream.nats.io/v1beta2", "kind": "Consumer", "metadata": { "name": "c" }, "spec": { "streamName": "S", "durableName": "c" } }),
    );
    assert_eq!(consumer.documents[0]["spec"]["ackPolicy"], "none");
}

#[test]
fn inline_servers_become_a_connection_and_file_credentials_a_note() {
    let converted = one(json!({
        "apiVersion": "jetstream.nats.io/v1beta2",
        "kind": "Stream",
        "metadata": { "name": "mystream", "namespace": "shop" },
        "spec": { "name": "mystream", "servers": ["nats://acme.org:4222"], "creds": "/etc/jsc-creds/my.creds", "storage": "file" }
    }));
    assert_eq!(converted.documents.len(), 2);
    assert_eq!(
        converted.documents[0],
        json!({
            "apiVersion": "jetway.dev/v1alpha1",
            "kind": "NatsConnection",
            "metadata": { "name": "mystream-connection", "namespace": "shop" },
            "spec": { "servers": ["nats://acme.org:4222"] }
        })
    );
    assert_eq!(converted.documents[1]["spec"]["connectionRef"], json!({ "name": "mystream-connection" }));
    assert!(converted.documents[1]["spec"].get("creds").is_none());
    assert!(converted.notes.iter().any(|n| n.contains("creds")), "{:?}", converted.notes);
}

#[test]
fn an_account_becomes_a_nats_connection_with_its_secrets() {
    let converted = one(json!({
        "apiVersion": "jetstream.nats.io/v1beta2",
        "kind": "Account",
        "metadata": { "name": "shop" },
        "spec": {
            "servers": ["nats://nats:4222"],
            "creds": { "secret": { "name": "shop-creds" }, "file": "user.creds" },
            "tls": { "secret": { "name": "shop-tls" }, "ca": "ca.crt", "cert": "tls.crt", "key": "tls.key" }
        }
    }));
    assert_eq!(
        converted.documents,
        [json!({
            "apiVersion": "jetway.dev/v1alpha1",
            "kind": "NatsConnection",
            "metadata": { "name": "shop" },
            "spec": {
                "servers": ["nats://nats:4222"],
                "auth": { "creds": { "name": "shop-creds", "key": "user.creds" } },
                "tls": { "ca": { "name": "shop-tls", "key": "ca.crt" }, "clientSecretName": "shop-tls" }
            }
        })]
    );
    assert!(converted.notes.is_empty(), "{:?}", converted.notes);
}

#[test]
fn other_documents_pass_through_and_kinds_without_a_counterpart_are_named() {
    let deployment = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "d" } });
    let converted = convert(vec![
        deployment.clone(),
        json!({ "apiVersion": "jetstream.nats.io/v1beta2", "kind": "KeyValue", "metadata": { "name": "kv" } }),
    ]);
    assert_eq!(converted.documents, [deployment]);
    assert!(converted.notes[0].contains("KeyValue kv"));
}
