//! `jetway convert`: NACK (`jetstream.nats.io/v1beta2`) manifests as Jetway objects.
//! Pure: documents in, documents and notes for the user out.
//!
//! Streams and Consumers keep their spec (Jetway uses NACK's field names), lose
//! NACK's per-object connection fields, and name a NatsConnection instead: the
//! Account they named, or one made from their inline `servers`. What NACK's schema
//! filled in by default (memory storage, `ackPolicy: none`) is written out, since an
//! unset field means the server's default in Jetway. Accounts become NatsConnections.

use serde_json::{Map, Value, json};

use crate::api::GROUP;

const NACK_GROUP: &str = "jetstream.nats.io";
/// NACK's per-object connection settings, replaced by `connectionRef`.
const CONNECTION_FIELDS: [&str; 7] = ["servers", "creds", "nkey", "tls", "tlsFirst", "account", "jsDomain"];

/// The converted documents, and what the user should know about them.
#[derive(Debug, Default)]
pub struct Converted {
    pub documents: Vec<Value>,
    pub notes: Vec<String>,
}

/// Converts every NACK document; other documents pass through unchanged.
pub fn convert(documents: Vec<Value>) -> Converted {
    let mut converted = Converted::default();
    for document in documents {
        let group = document["apiVersion"].as_str().unwrap_or_default().split('/').next().unwrap_or_default();
        if group != NACK_GROUP {
            converted.documents.push(document);
            continue;
        }
        let kind = document["kind"].as_str().unwrap_or_default().to_owned();
        let name = document["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        match kind.as_str() {
            "Stream" | "Consumer" => resource(document, &kind, &name, &mut converted),
            "Account" => {
                let connection = account(&document, &name, &mut converted.notes);
                converted.documents.push(connection);
            }
            _ => converted.notes.push(format!("{kind} {name}: Jetway has no {kind} kind; left out")),
        }
    }
    converted
}

fn api_version() -> String {
    format!("{GROUP}/v1alpha1")
}

/// The object's metadata without what the server wrote.
fn metadata(document: &Value) -> Value {
    let mut metadata = document["metadata"].as_object().cloned().unwrap_or_default();
    for key in ["uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink"] {
        metadata.remove(key);
    }
    Value::Object(metadata)
}

fn resource(document: Value, kind: &str, name: &str, converted: &mut Converted) {
    let mut spec = document["spec"].as_object().cloned().unwrap_or_default();
    let removed: Map<String, Value> =
        CONNECTION_FIELDS.iter().filter_map(|key| spec.remove(*key).map(|v| ((*key).to_owned(), v))).collect();
    let at = format!("{kind} {name}");
    if let Some(Value::String(account)) = removed.get("account").filter(|a| a.as_str() != Some("")) {
        spec.insert("connectionRef".into(), json!({ "name": account }));
    } else if let Some(servers) = removed.get("servers").and_then(Value::as_array).filter(|s| !s.is_empty()) {
        let connection = format!("{name}-connection");
        let mut connection_spec = json!({ "servers": servers });
        if let Some(domain) = removed.get("jsDomain").filter(|d| d.as_str().is_some_and(|d| !d.is_empty())) {
            connection_spec["domain"] = domain.clone();
        }
        converted.documents.push(json!({
            "apiVersion": api_version(),
            "kind": "NatsConnection",
            "metadata": { "name": connection, "namespace": document["metadata"]["namespace"] },
        }));
        let last = converted.documents.last_mut().expect("just pushed");
        last["spec"] = connection_spec;
        if last["metadata"]["namespace"].is_null() {
            last["metadata"].as_object_mut().expect("an object").remove("namespace");
        }
        spec.insert("connectionRef".into(), json!({ "name": connection }));
        converted.notes.push(format!("{at}: its servers are now NatsConnection {connection}"));
    }
    for key in ["creds", "nkey", "tls"] {
        if removed.get(key).is_some_and(|v| !v.is_null() && *v != json!("") && *v != json!({})) {
            converted.notes.push(format!(
                "{at}: NACK read {key} from files in its own pod; give the NatsConnection the same from a Secret"
            ));
        }
    }
    if let Some(Value::Bool(true)) = spec.remove("preventUpdate") {
        converted.notes.push(format!(
            "{at}: preventUpdate has no equivalent; the annotation jetway.dev/paused: \"true\" stops all changes"
        ));
    }
    match spec.remove("preventDelete") {
        Some(Value::Bool(true)) => {}
        _ if kind == "Stream" => converted.notes.push(format!(
            "{at}: NACK deleted the stream with its object; Jetway keeps it (deletionPolicy: Retain) unless deletionPolicy: Delete is set"
        )),
        _ => {}
    }
    // NACK's schema defaults, written out so the server keeps what NACK gave it.
    if kind == "Stream" && !spec.contains_key("storage") {
        spec.insert("storage".into(), json!("memory"));
        converted
            .notes
            .push(format!("{at}: storage: memory written out (NACK's default; Jetway's is the server's, file)"));
    }
    if kind == "Consumer" && !spec.contains_key("ackPolicy") {
        spec.insert("ackPolicy".into(), json!("none"));
        converted.notes.push(format!("{at}: ackPolicy: none written out (NACK's default; the server's is explicit)"));
    }
    converted.documents.push(json!({
        "apiVersion": api_version(),
        "kind": kind,
        "metadata": metadata(&document),
        "spec": spec,
    }));
}

fn account(document: &Value, name: &str, notes: &mut Vec<String>) -> Value {
    let spec = &document["spec"];
    let secret = |field: &str| spec[field]["secret"]["name"].as_str().map(str::to_owned);
    let mut connection = json!({ "servers": spec["servers"].as_array().cloned().unwrap_or_default() });
    let mut auth = Map::new();
    if let (Some(secret), Some(key)) = (secret("creds"), spec["creds"]["file"].as_str()) {
        auth.insert("creds".into(), json!({ "name": secret, "key": key }));
    }
    if let (Some(secret), Some(key)) = (secret("token"), spec["token"]["token"].as_str()) {
        auth.insert("token".into(), json!({ "name": secret, "key": key }));
    }
    if let Some(secret) = secret("user") {
        auth.insert(
            "userPassword".into(),
            json!({ "secretName": secret, "userKey": spec["user"]["user"], "passwordKey": spec["user"]["password"] }),
        );
    }
    if auth.len() > 1 {
        notes.push(format!("Account {name}: NatsConnection takes one auth method; keep one of {:?}", auth.keys()));
    }
    if !auth.is_empty() {
        connection["auth"] = Value::Object(auth);
    }
    if let Some(secret) = secret("tls") {
        let mut tls = Map::new();
        if let Some(ca) = spec["tls"]["ca"].as_str().filter(|ca| !ca.is_empty()) {
            tls.insert("ca".into(), json!({ "name": secret, "key": ca }));
        }
        let (cert, key) =
            (spec["tls"]["cert"].as_str().unwrap_or_default(), spec["tls"]["key"].as_str().unwrap_or_default());
        if !cert.is_empty() || !key.is_empty() {
            tls.insert("clientSecretName".into(), json!(secret));
            if (cert, key) != ("tls.crt", "tls.key") {
                notes.push(format!(
                    "Account {name}: Jetway reads the client certificate from tls.crt and tls.key of Secret {secret}, not {cert} and {key}"
                ));
            }
        }
        connection["tls"] = Value::Object(tls);
    }
    json!({
        "apiVersion": api_version(),
        "kind": "NatsConnection",
        "metadata": metadata(document),
        "spec": connection,
    })
}

#[cfg(test)]
mod tests;
