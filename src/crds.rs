//! The CustomResourceDefinitions, generated from the Rust types.

use std::collections::HashMap;
use std::io::Write;
use std::sync::LazyLock;

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

/// Why a spec breaks its kind's schema: the field, as `spec.sources[0].name`, and what
/// the schema asks of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaViolation {
    pub path: String,
    pub message: String,
}

/// The spec schema of each kind, compiled once, for [`check_spec`].
static SPEC_SCHEMAS: LazyLock<HashMap<String, jsonschema::Validator>> = LazyLock::new(|| {
    all()
        .into_iter()
        .filter_map(|crd| {
            let version = crd.spec.versions.first()?;
            let schema = version.schema.as_ref()?.open_api_v3_schema.as_ref()?;
            let mut spec = serde_json::to_value(schema.properties.as_ref()?.get("spec")?).ok()?;
            as_json_schema(&mut spec);
            let validator = jsonschema::options().build(&spec).expect("the generated spec schema compiles");
            Some((crd.spec.names.kind, validator))
        })
        .collect()
});

/// OpenAPI's `nullable: true` in JSON Schema's words: null is one of the types.
fn as_json_schema(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            if map.remove("nullable") == Some(serde_json::Value::Bool(true))
                && let Some(serde_json::Value::String(t)) = map.get("type").cloned()
            {
                map.insert("type".into(), serde_json::json!([t, "null"]));
            }
            map.values_mut().for_each(as_json_schema);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(as_json_schema),
        _ => {}
    }
}

/// Checks a `kind`'s spec against the patterns, ranges and lengths of its CRD schema,
/// which the apiserver checks at admission: an object written past admission (straight
/// to etcd, or under an older schema) is held to the same rules. CEL rules are not
/// evaluated here; what they guard (durations, times) the planners check themselves.
/// Integers must also fit Kubernetes' int64.
pub fn check_spec(kind: &str, spec: &serde_json::Value) -> Result<(), SchemaViolation> {
    if let Some(path) = too_large(spec, "spec".to_owned()) {
        return Err(SchemaViolation { path, message: "is larger than Kubernetes integers (int64) hold".into() });
    }
    let Some(validator) = SPEC_SCHEMAS.get(kind) else { return Ok(()) };
    match validator.iter_errors(spec).next() {
        None => Ok(()),
        Some(error) => {
            let mut path = "spec".to_owned();
            for segment in error.instance_path().to_string().split('/').skip(1) {
                match segment.parse::<usize>() {
                    Ok(index) => path.push_str(&format!("[{index}]")),
                    Err(_) => path.push_str(&format!(".{}", segment.replace("~1", "/").replace("~0", "~"))),
                }
            }
            Err(SchemaViolation { path, message: error.to_string() })
        }
    }
}

/// The path of the first integer above int64, if any.
fn too_large(value: &serde_json::Value, path: String) -> Option<String> {
    match value {
        serde_json::Value::Number(n) => (n.is_u64() && !n.is_i64()).then_some(path),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| too_large(item, format!("{path}[{i}]")))
        }
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| too_large(v, format!("{path}.{k}"))),
        _ => None,
    }
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
