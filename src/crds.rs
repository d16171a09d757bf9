//! The CustomResourceDefinitions, generated from the Rust types.

use std::io::Write;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::connection::NatsConnection;
use crate::api::consumer::Consumer;
use crate::api::stream::Stream;
use crate::api::workerpool::WorkerPool;

/// Every CRD Jetway serves.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![Stream::crd(), Consumer::crd(), NatsConnection::crd(), WorkerPool::crd()]
        .into_iter()
        .map(unseen_until_reconciled)
        .collect()
}

/// Gives `status` the default `{observedGeneration: 0}`, which the apiserver fills in
/// until Jetway writes a status. kstatus (Flux's health checks) reads an object without
/// status as Current, that is reconciled; generation 1 against observed 0 reads as
/// InProgress until Jetway has seen the object.
fn unseen_until_reconciled(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                serde_json::json!({ "observedGeneration": 0 }),
            ));
        }
    }
    crd
}

/// Writes all CRDs as one multi-document YAML stream.
pub fn print(out: &mut impl Write) -> anyhow::Result<()> {
    for crd in all() {
        writeln!(out, "---")?;
        out.write_all(serde_saphyr::to_string(&crd)?.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_in_crds_and_the_charts_are_the_generated_ones() {
        let mut generated = Vec::new();
        print(&mut generated).expect("printing the CRDs");
        let generated = String::from_utf8(generated).expect("utf-8");
        for copy in ["crds/jetway.crds.yaml", "charts/jetway/crds/jetway.crds.yaml"] {
            let path = format!("{}/{copy}", env!("CARGO_MANIFEST_DIR"));
            let checked_in = std::fs::read_to_string(&path).expect(copy);
            assert!(
                checked_in == generated,
                "{copy} is out of date: run `cargo run -- crds > {copy}` and commit the result"
            );
        }
    }

    #[test]
    fn every_crd_is_namespaced_in_the_jetway_group_and_category() {
        for crd in all() {
            assert_eq!(crd.spec.group, crate::api::GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.names.categories.as_deref(), Some(&["jetway".to_owned()][..]));
            assert!(crd.spec.versions.iter().all(|v| v.subresources.as_ref().is_some_and(|s| s.status.is_some())));
        }
    }
}
