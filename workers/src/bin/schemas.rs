//! `jetway-schemas DIR`: writes each event's JSON Schema to `DIR/<subject>.json`.

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "workers/schemas".into());
    for (subject, schema) in jetway_workers::events::schemas() {
        let path = std::path::Path::new(&dir).join(format!("{subject}.json"));
        std::fs::write(&path, serde_json::to_string_pretty(&schema)? + "\n")?;
        println!("{}", path.display());
    }
    Ok(())
}
