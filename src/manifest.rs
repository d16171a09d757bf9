//! Manifests on disk: Jetway objects read from files, directories (recursively) or
//! stdin, as `kubectl apply -f` takes them, and written back as multi-document YAML.

use std::io::Read;
use std::path::{Path, PathBuf};

use kube::Resource;
use serde::Serialize;

use crate::api::GROUP;
use crate::api::connection::NatsConnection;
use crate::api::consumer::Consumer;
use crate::api::stream::Stream;

/// One Jetway object from a manifest.
#[derive(Clone, Debug)]
pub enum Manifest {
    Stream(Stream),
    Consumer(Consumer),
    Connection(NatsConnection),
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: {kind} {name}: {source}")]
    Invalid { path: PathBuf, kind: String, name: String, source: serde_json::Error },
}

/// Every Jetway object under `path` (`-` is stdin). Other kinds, such as a
/// kustomization or a Deployment, are skipped.
pub fn read(path: &Path) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    for (file, document) in documents(path)? {
        manifests.extend(typed(&file, document)?);
    }
    Ok(manifests)
}

/// Every YAML or JSON document under `path` (`-` is stdin), with the file it is in.
pub fn documents(path: &Path) -> Result<Vec<(PathBuf, serde_json::Value)>, ManifestError> {
    let mut documents = Vec::new();
    for file in files(path)? {
        let text = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| ManifestError::Read { path: file.clone(), source })?;
            text
        } else {
            std::fs::read_to_string(&file).map_err(|source| ManifestError::Read { path: file.clone(), source })?
        };
        let parsed: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
            .map_err(|error| ManifestError::Yaml { path: file.clone(), message: error.to_string() })?;
        documents.extend(parsed.into_iter().filter(|d| !d.is_null()).map(|d| (file.clone(), d)));
    }
    Ok(documents)
}

/// The files `path` names: itself, or the YAML and JSON files below it, in name order.
fn files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    if path.as_os_str() == "-" || !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let read_dir =
        |dir: &Path| std::fs::read_dir(dir).map_err(|source| ManifestError::Read { path: dir.to_owned(), source });
    let mut found = Vec::new();
    let mut pending = vec![path.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in read_dir(&dir)? {
            let entry = entry.map_err(|source| ManifestError::Read { path: dir.clone(), source })?;
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The Jetway object a document holds, if it holds one.
fn typed(path: &Path, document: serde_json::Value) -> Result<Option<Manifest>, ManifestError> {
    let api_version = document["apiVersion"].as_str().unwrap_or_default();
    if api_version.split('/').next() != Some(GROUP) {
        return Ok(None);
    }
    let kind = document["kind"].as_str().unwrap_or_default().to_owned();
    let name = document["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let invalid =
        |source| ManifestError::Invalid { path: path.to_owned(), kind: kind.clone(), name: name.clone(), source };
    Ok(Some(match kind.as_str() {
        "Stream" => Manifest::Stream(serde_json::from_value(document).map_err(invalid)?),
        "Consumer" => Manifest::Consumer(serde_json::from_value(document).map_err(invalid)?),
        "NatsConnection" => Manifest::Connection(serde_json::from_value(document).map_err(invalid)?),
        _ => return Ok(None),
    }))
}

/// `<namespace>/<name>`, with `namespace` when the manifest names none, as `kubectl
/// apply -n` would place it.
pub fn owner<K: Resource>(object: &K, namespace: &str) -> String {
    let meta = object.meta();
    format!("{}/{}", meta.namespace.as_deref().unwrap_or(namespace), meta.name.as_deref().unwrap_or_default())
}

/// Objects as one multi-document YAML stream.
pub fn to_yaml<T: Serialize>(objects: &[T]) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object)?);
    }
    Ok(out)
}
