//! Objects as the controllers watch them: decoded one by one, so that one object the
//! Rust types cannot read (a value the schema admits but the type refuses, an object
//! written under an older schema) is reported on its own instead of failing the
//! whole list, and every other object of its kind keeps reconciling.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::api::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A watched object: its metadata always, the typed object when it could be read.
#[derive(Clone, Debug)]
pub struct Decoded<K> {
    pub metadata: ObjectMeta,
    pub object: Result<K, DecodeError>,
    /// The conditions in its status, read on their own so that a bad spec can still
    /// be reported with stable transition times.
    pub conditions: Vec<Condition>,
}

/// Why an object could not be read, and where in it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DecodeError {
    /// The field's path, such as `spec.maxAge`.
    pub path: String,
    pub message: String,
}

impl<'de, K: DeserializeOwned + Resource<DynamicType = ()>> Deserialize<'de> for Decoded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(deserializer)?;
        prune(&mut value);
        let metadata = match value.get("metadata") {
            Some(metadata) => ObjectMeta::deserialize(metadata).map_err(serde::de::Error::custom)?,
            None => ObjectMeta::default(),
        };
        let conditions =
            value.pointer("/status/conditions").and_then(|c| Vec::<Condition>::deserialize(c).ok()).unwrap_or_default();
        let object = crate::crds::check_spec(&K::kind(&()), value.get("spec").unwrap_or(&serde_json::Value::Null))
            .map_err(|v| DecodeError { path: v.path, message: v.message })
            .and_then(|()| {
                serde_path_to_error::deserialize(value)
                    .map_err(|err| DecodeError { path: err.path().to_string(), message: err.inner().to_string() })
            });
        Ok(Self { metadata, object, conditions })
    }
}

/// What no controller reads goes before the object is kept: managed fields and the
/// copy of the whole object `kubectl apply` leaves in an annotation are most of an
/// object's size.
fn prune(value: &mut serde_json::Value) {
    if let Some(metadata) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        metadata.remove("managedFields");
        if let Some(annotations) = metadata.get_mut("annotations").and_then(|a| a.as_object_mut()) {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
}

impl<K: Serialize> Serialize for Decoded<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.object {
            Ok(object) => object.serialize(serializer),
            Err(_) => serde_json::json!({ "metadata": self.metadata }).serialize(serializer),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Decoded<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::stream::Stream;

    fn decoded(spec: serde_json::Value) -> Decoded<Stream> {
        let object = serde_json::json!({
            "apiVersion": "jetway.dev/v1alpha1", "kind": "Stream",
            "metadata": {"name": "orders", "namespace": "shop"}, "spec": spec,
        });
        serde_json::from_value(object).expect("always decodes")
    }

    #[test]
    fn an_object_the_type_refuses_keeps_its_metadata_and_names_the_field() {
        let bad = decoded(serde_json::json!({"subjects": ["a"], "maxAge": "6000000h"}));
        assert_eq!(bad.metadata.name.as_deref(), Some("orders"));
        let err = bad.object.expect_err("maxAge is out of range");
        assert_eq!(err.path, "spec.maxAge");
        assert!(err.message.contains("2562047h"), "{}", err.message);
    }

    #[test]
    fn a_value_past_the_schema_is_refused_as_the_apiserver_would() {
        for (spec, path) in [
            (serde_json::json!({"replicas": 7}), "spec.replicas"),
            (serde_json::json!({"sources": [{"name": "a b"}]}), "spec.sources[0].name"),
            (serde_json::json!({"firstSequence": u64::MAX}), "spec.firstSequence"),
            (serde_json::json!({"maxAge": format!("{}1s", "0".repeat(64))}), "spec.maxAge"),
        ] {
            let err = decoded(spec).object.expect_err("refused");
            assert_eq!(err.path, path, "{err}");
        }
        decoded(serde_json::json!({"maxAge": null, "subjects": ["a"]})).object.expect("null is unset");
    }

    #[test]
    fn a_good_object_decodes_whole() {
        let good = decoded(serde_json::json!({"subjects": ["a"], "maxAge": "1h"}));
        let stream = good.object.expect("a Stream");
        assert_eq!(stream.spec.subjects, Some(vec!["a".to_owned()]));
    }
}
