//! The checked-in JSON Schemas match the Rust types, and every payload a released
//! version published still decodes.

use std::path::Path;

use jetway_workers::events::{Decode, PipelineEvent, schemas};

fn schemas_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas"))
}

#[test]
fn checked_in_schemas_match_the_event_types() {
    for (subject, schema) in schemas() {
        let path = schemas_dir().join(format!("{subject}.json"));
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = serde_json::to_string_pretty(&schema).unwrap() + "\n";
        assert!(
            checked_in == generated,
            "{} is out of date: run `cargo run -p jetway-workers --bin jetway-schemas -- workers/schemas`",
            path.display()
        );
    }
}

#[test]
fn every_published_sample_of_every_version_still_decodes() {
    let mut decoded = 0;
    for (subject, _) in schemas() {
        let dir = schemas_dir().join("samples").join(subject);
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let payload = std::fs::read(&path).unwrap();
            PipelineEvent::decode(subject, &payload).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            decoded += 1;
        }
    }
    assert!(decoded >= schemas().len(), "each event has at least one sample");
}

#[test]
fn an_event_on_a_subject_of_another_version_is_not_read() {
    let sample = std::fs::read(schemas_dir().join("samples/orders.created.v1/0.1.0.json")).unwrap();
    assert!(PipelineEvent::decode("orders.created.v2", &sample).is_err());
}
