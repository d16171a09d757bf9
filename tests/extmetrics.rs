//! The external metrics API as an HPA (through the aggregation layer) reads it:
//! discovery, and `nats_consumer_pending_messages` by namespace and label selector,
//! over TLS with the serving certificate given to the operator.

mod support;

use jetway::extmetrics::{Certificate, PENDING};
use jetway_testground::pki::{Ca, Usage};
use support::{EVENTUALLY, Operator, POLL, TestContext, wait_until};

/// A kube client pointed at the metrics server, trusting the CA that signed it: the
/// same HTTPS stack (rustls, verification on) the operator uses. With `front_proxy`,
/// it presents the apiserver's front-proxy client certificate, as the aggregator does.
fn client_for(addr: std::net::SocketAddr, ca: &Ca, front_proxy: bool) -> kube::Client {
    let pki = support::ground().kubeconfig.parent().expect("the kube dir").join("pki");
    client_with(addr, ca, front_proxy.then_some((pki.as_path(), "front-proxy-client")))
}

/// The operator serving the external metrics API on a free port, with a serving
/// certificate from a CA of the test's own.
struct Served {
    ca: Ca,
    dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    operator: Operator,
}

async fn serve(ctx: &TestContext) -> Served {
    let ca = Ca::new("jetway-test-ca").unwrap();
    let dir = tempfile::tempdir().unwrap();
    ca.issue("jetway", None, &["localhost", "127.0.0.1"], Usage::Server).unwrap().write(dir.path(), "serving").unwrap();
    let port = jetway_testground::wait::free_port().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let certificate = Certificate::Files { cert: dir.path().join("serving.crt"), key: dir.path().join("serving.key") };
    let operator = Operator::start(&ctx.namespace, |config| config.external_metrics = Some((addr, certificate))).await;
    Served { ca, dir, addr, operator }
}

async fn get(client: &kube::Client, path: &str) -> (u16, serde_json::Value) {
    let request = http::Request::get(path).body(Vec::new()).unwrap();
    match client.request_text(request).await {
        Ok(text) => (200, serde_json::from_str(&text).unwrap()),
        Err(kube::Error::Api(status)) => (status.code, serde_json::to_value(&*status).unwrap()),
        Err(other) => panic!("{path}: {other}"),
    }
}

#[tokio::test]
async fn an_hpa_reads_pending_messages_by_consumer_and_stream_labels() {
    let ctx = TestContext::new("extmetrics").await;
    support::install_crds(&ctx.client).await;
    let Served { ca, dir: _dir, addr, operator } = serve(&ctx).await;
    let name = ctx.unique("EXT");
    support::stream_with_consumer(&ctx, "orders", &name, "ORDER_PROC").await;
    for _ in 0..7 {
        ctx.jetstream.publish(format!("{name}.order"), "o".into()).await.unwrap().await.unwrap();
    }

    let client = client_for(addr, &ca, true);
    let (code, discovery) = get(&client, "/apis/external.metrics.k8s.io/v1beta1").await;
    assert_eq!(code, 200);
    assert_eq!(discovery["resources"][0]["name"], PENDING);

    let path = |namespace: &str, selector: &str| {
        format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{PENDING}?labelSelector={selector}")
    };
    let by_consumer = path(&ctx.namespace, "consumer%3DORDER_PROC");
    let list = wait_until("pending 7 through the API", EVENTUALLY, POLL, || async {
        let (_, list) = get(&client, &by_consumer).await;
        Ok((list["items"][0]["value"] == "7").then_some(list))
    })
    .await
    .unwrap();
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(list["items"][0]["metricLabels"]["stream"], name.as_str());

    let both = path(&ctx.namespace, &format!("consumer%3DORDER_PROC,stream%3D{name}"));
    assert_eq!(get(&client, &both).await.1["items"].as_array().unwrap().len(), 1);
    // A consumer that does not exist, or another namespace: no item, never a 0.
    assert!(get(&client, &path(&ctx.namespace, "consumer%3DNOPE")).await.1["items"].as_array().unwrap().is_empty());
    assert!(get(&client, &path("elsewhere", "consumer%3DORDER_PROC")).await.1["items"].as_array().unwrap().is_empty());
    let (code, _) = get(&client, &path(&ctx.namespace, "consumer%21%3Dx")).await;
    assert_eq!(code, 400, "unsupported selectors are refused");
    let (code, _) =
        get(&client, &format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{}/cpu", ctx.namespace)).await;
    assert_eq!(code, 404);
    operator.stop().await;
}

#[tokio::test]
async fn an_idle_socket_stalls_nothing_and_only_the_front_proxy_gets_in() {
    let ctx = TestContext::new("extmetrics-tls").await;
    support::install_crds(&ctx.client).await;
    let Served { ca, dir, addr, operator } = serve(&ctx).await;
    let discovery = "/apis/external.metrics.k8s.io/v1beta1";
    let front_proxy = client_for(addr, &ca, true);
    wait_until("the API to answer", EVENTUALLY, POLL, || async {
        let request = http::Request::get(discovery).body(Vec::new()).unwrap();
        Ok(front_proxy.request_text(request).await.ok())
    })
    .await
    .unwrap();

    // Sockets that never start their handshake hold up no one.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let started = std::time::Instant::now();
    assert_eq!(get(&front_proxy, discovery).await.0, 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "answered after {:?}", started.elapsed());

    // No client certificate, or one from another CA: refused.
    let refused = |client: kube::Client| async move {
        let request = http::Request::get(discovery).body(Vec::new()).unwrap();
        client.request_text(request).await.is_err()
    };
    assert!(refused(client_for(addr, &ca, false)).await, "without a client certificate");
    let stranger_ca = Ca::new("stranger-ca").unwrap();
    stranger_ca.issue("front-proxy-client", None, &[], Usage::Client).unwrap().write(dir.path(), "stranger").unwrap();
    assert!(refused(client_with(addr, &ca, Some((dir.path(), "stranger")))).await, "a certificate from another CA");
    drop(idle);
    operator.stop().await;
}

/// A client trusting `ca`, presenting the certificate `<name>.crt` / `<name>.key`
/// from a directory if given.
fn client_with(addr: std::net::SocketAddr, ca: &Ca, certificate: Option<(&std::path::Path, &str)>) -> kube::Client {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut config = kube::Config::new(format!("https://localhost:{}", addr.port()).parse().unwrap());
    let der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("the CA certificate");
    config.root_cert = Some(vec![der.to_vec()]);
    if let Some((dir, name)) = certificate {
        config.auth_info.client_certificate = Some(dir.join(format!("{name}.crt")).display().to_string());
        config.auth_info.client_key = Some(dir.join(format!("{name}.key")).display().to_string());
    }
    kube::Client::try_from(config).unwrap()
}
