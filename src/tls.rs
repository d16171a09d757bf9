//! TLS towards NATS: a rustls client configuration from PEM material, which may come
//! inline from Secrets, and optionally a server name to verify other than the URL's.

use std::sync::Arc;

use async_nats::rustls::client::WebPkiServerVerifier;
use async_nats::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use async_nats::rustls::pki_types::pem::PemObject;
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use async_nats::rustls::{self, DigitallySignedStruct, SignatureScheme};

use crate::nats::{ConnectError, TlsSettings, read};

/// The client configuration for `tls`, with the ring provider.
pub async fn client_config(tls: &TlsSettings) -> Result<rustls::ClientConfig, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &tls.ca {
        for cert in CertificateDer::pem_slice_iter(&read(ca).await?) {
            let cert = cert.map_err(|_| ConnectError::Pem { what: "CA" })?;
            roots.add(cert).map_err(ConnectError::Tls)?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(ConnectError::Tls)?;
    let builder = match &tls.server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let expected = ServerName::try_from(name.clone()).map_err(|_| ConnectError::ServerName(name.clone()))?;
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ConnectError::Tls(rustls::Error::General(e.to_string())))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NamedVerifier { inner, expected }))
        }
    };
    match &tls.client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&read(cert).await?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ConnectError::Pem { what: "client certificate" })?;
            let key = PrivateKeyDer::from_pem_slice(&read(key).await?)
                .map_err(|_| ConnectError::Pem { what: "client key" })?;
            builder.with_client_auth_cert(chain, key).map_err(ConnectError::Tls)
        }
    }
}

/// Full WebPKI verification, against a configured name instead of the URL's host.
#[derive(Debug)]
struct NamedVerifier {
    inner: Arc<WebPkiServerVerifier>,
    expected: ServerName<'static>,
}

impl ServerCertVerifier for NamedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.expected, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
