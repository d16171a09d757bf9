//! The external metrics API (`external.metrics.k8s.io/v1beta1`) that an HPA reads
//! through the aggregation layer: `nats_consumer_pending_messages` per consumer,
//! selected by the labels `consumer` and `stream` (JetStream names) within the
//! object's namespace, from the inventory's last reading.
//!
//! A consumer that is missing, or not read yet, gives no item: the HPA then holds its
//! replicas instead of reading a 0 (or scaling to max). Served over TLS, with a
//! certificate from files or, without them, one made at start. Only the aggregation
//! layer is let in: clients must present a certificate from the apiserver's
//! request-header CA with an allowed name, as `kube-system/extension-apiserver-authentication`
//! publishes them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::inventory::{Inventory, Observation};

pub const GROUP_VERSION: &str = "external.metrics.k8s.io/v1beta1";
pub const PENDING: &str = "nats_consumer_pending_messages";

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub enum Certificate {
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
    /// Made at start for these names; the APIService then skips verification or is
    /// given the CA some other way.
    SelfSigned(Vec<String>),
}

/// Who may call: the apiserver's front proxy, as the cluster publishes it.
#[derive(Clone, Debug)]
pub struct FrontProxy {
    /// PEM of the CA that signs the front proxy's client certificate.
    pub ca_pem: String,
    /// Common names the client certificate may carry; empty allows any.
    pub allowed_names: Vec<String>,
}

impl FrontProxy {
    /// Reads `kube-system/extension-apiserver-authentication`.
    pub async fn from_cluster(client: &kube::Client) -> Result<Self, ServeError> {
        let configmaps: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client.clone(), "kube-system");
        let configmap = configmaps.get("extension-apiserver-authentication").await.map_err(|e| {
            ServeError::Certificate(format!("reading kube-system/extension-apiserver-authentication: {e}"))
        })?;
        let data = configmap.data.unwrap_or_default();
        let ca_pem = data
            .get("requestheader-client-ca-file")
            .cloned()
            .ok_or_else(|| ServeError::Certificate("the cluster publishes no requestheader-client-ca-file".into()))?;
        let allowed_names = data
            .get("requestheader-allowed-names")
            .and_then(|names| serde_json::from_str(names).ok())
            .unwrap_or_default();
        Ok(Self { ca_pem, allowed_names })
    }

    /// Whether a verified client certificate carries an allowed name.
    fn allows(&self, der: &[u8]) -> bool {
        if self.allowed_names.is_empty() {
            return true;
        }
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return false };
        let common_name = cert.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok());
        common_name.is_some_and(|cn| self.allowed_names.iter().any(|allowed| allowed == cn))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading the serving certificate: {0}")]
    Certificate(String),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A label selector as the HPA sends it: `key=value` (or `key==value`) terms,
/// comma-separated.
pub fn parse_selector(selector: &str) -> Result<BTreeMap<String, String>, String> {
    selector
        .split(',')
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .map(|term| {
            let (key, value) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .filter(|(key, _)| !key.ends_with('!'))
                .ok_or_else(|| format!("only key=value terms are supported, not {term:?}"))?;
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

#[derive(Deserialize)]
struct ValuesQuery {
    #[serde(rename = "labelSelector", default)]
    label_selector: String,
}

pub fn router(lag: Arc<Inventory>) -> Router {
    Router::new()
        .route("/apis/external.metrics.k8s.io/v1beta1", get(discovery))
        .route("/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}", get(values))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .with_state(lag)
}

async fn discovery() -> Json<serde_json::Value> {
    Json(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": [{ "name": PENDING, "singularName": "", "namespaced": true, "kind": "ExternalMetricValueList", "verbs": ["get"] }]
    }))
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code.as_u16() });
    (code, Json(body)).into_response()
}

async fn values(
    State(lag): State<Arc<Inventory>>,
    Path((namespace, metric)): Path<(String, String)>,
    Query(query): Query<ValuesQuery>,
) -> Response {
    if metric != PENDING {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no external metric {metric}; Jetway serves {PENDING}"),
        );
    }
    let selector = match parse_selector(&query.label_selector) {
        Ok(selector) => selector,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    // What an HPA asks for is read every lag interval from now on.
    let selected = lag.demand_in(&namespace, |watched| {
        selector.iter().all(|(key, value)| match key.as_str() {
            "consumer" => watched.consumer == *value,
            "stream" => watched.stream == *value,
            _ => false,
        })
    });
    let items: Vec<serde_json::Value> = selected
        .into_iter()
        .filter_map(|(watched, observation)| match observation {
            Observation::Found { lag, at } => {
                let timestamp = crate::inventory::read_at(at);
                Some(json!({
                    "metricName": PENDING,
                    "metricLabels": { "consumer": watched.consumer, "stream": watched.stream },
                    "timestamp": timestamp.to_string(),
                    "value": lag.pending.to_string(),
                }))
            }
            // No value for a consumer not there, or not read lately: the HPA then holds.
            Observation::Missing { .. } | Observation::Stale { .. } => None,
        })
        .collect();
    Json(json!({ "kind": "ExternalMetricValueList", "apiVersion": GROUP_VERSION, "metadata": {}, "items": items }))
        .into_response()
}

fn tls_config(
    certificate: &Certificate,
    front_proxy: &FrontProxy,
) -> Result<tokio_rustls::rustls::ServerConfig, ServeError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let error = |e: &dyn std::fmt::Display| ServeError::Certificate(e.to_string());
    let (chain, key) = match certificate {
        Certificate::Files { cert, key } => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| error(&e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| error(&e))?;
            (chain, PrivateKeyDer::from_pem_file(key).map_err(|e| error(&e))?)
        }
        Certificate::SelfSigned(names) => {
            let made = rcgen::generate_simple_self_signed(names.clone()).map_err(|e| error(&e))?;
            let key = PrivateKeyDer::try_from(made.signing_key.serialize_der()).map_err(|e| error(&e))?;
            (vec![made.cert.der().clone()], key)
        }
    };
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(front_proxy.ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| error(&e))?).map_err(|e| error(&e))?;
    }
    let verifier =
        tokio_rustls::rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| error(&e))?;
    tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| error(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| error(&e))
}

/// TCP connections that have finished a TLS handshake, for `axum::serve`.
/// How many TLS handshakes may be under way at once, and how long one may take: a
/// client that opens a socket and says nothing holds one slot for a while, never
/// the aggregator's next request.
const HANDSHAKES_AT_ONCE: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections whose TLS handshake is done and whose client is the front proxy.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` and runs each handshake in its own task, bounded in number.
    fn new(tcp: TcpListener, acceptor: TlsAcceptor, front_proxy: FrontProxy) -> std::io::Result<Self> {
        let addr = tcp.local_addr()?;
        let (sender, ready) = tokio::sync::mpsc::channel(HANDSHAKES_AT_ONCE);
        let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
        let front_proxy = Arc::new(front_proxy);
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                // Ends with the server, which drops the receiving side.
                let accepted = tokio::select! {
                    accepted = tcp.accept() => accepted,
                    () = sender.closed() => return,
                };
                let Ok((tcp, addr)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (acceptor, front_proxy, sender) = (acceptor.clone(), front_proxy.clone(), sender.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let peer = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first());
                            if peer.is_some_and(|cert| front_proxy.allows(cert)) {
                                let _ = sender.send((tls, addr)).await;
                            } else {
                                tracing::debug!(%addr, "client certificate not among the allowed names");
                            }
                        }
                        Ok(Err(error)) => tracing::debug!(%addr, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ends only once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// Binds `addr` and serves the API until `shutdown`; returns the bound address and
/// the serving task.
pub async fn serve(
    addr: SocketAddr,
    certificate: &Certificate,
    front_proxy: FrontProxy,
    lag: Arc<Inventory>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>), ServeError> {
    let acceptor = TlsAcceptor::from(Arc::new(tls_config(certificate, &front_proxy)?));
    let tcp = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let bound = tcp.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    let listener = TlsListener::new(tcp, acceptor, front_proxy).map_err(|source| ServeError::Bind { addr, source })?;
    let task = tokio::spawn(async move {
        axum::serve(listener, router(lag)).with_graceful_shutdown(shutdown.cancelled_owned()).await
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_as_the_hpa_sends_them_parse() {
        let parsed = parse_selector("consumer=ORDER_PROC,stream==ORDERS").unwrap();
        assert_eq!(
            parsed,
            BTreeMap::from([("consumer".into(), "ORDER_PROC".into()), ("stream".into(), "ORDERS".into())])
        );
        assert_eq!(parse_selector("").unwrap(), BTreeMap::new());
        assert!(parse_selector("consumer!=x").is_err());
        assert!(parse_selector("consumer in (a,b)").is_err());
    }
}
