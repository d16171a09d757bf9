//! The CustomResourceDefinitions, generated from the Rust types.

use std::io::Write;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Every CRD Jetway serves.
pub fn all() -> Vec<CustomResourceDefinition> {
    Vec::new()
}

/// Writes all CRDs as one multi-document YAML stream.
pub fn print(out: &mut impl Write) -> anyhow::Result<()> {
    for crd in all() {
        writeln!(out, "---")?;
        out.write_all(serde_saphyr::to_string(&crd)?.as_bytes())?;
    }
    Ok(())
}
