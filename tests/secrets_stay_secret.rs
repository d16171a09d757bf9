//! Secret values never reach the operator's logs, status or events: everything the
//! operator printed (at debug level) while connecting with right and wrong
//! credentials is searched for them.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use jetway::api::connection::NatsConnection;
use jetway::api::stream::Stream;
use jetway_testground::NatsServer;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{Operator, TestContext, wait_condition};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secret_values_appear_in_no_log_status_or_event() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt().with_env_filter("debug").with_writer(move || writer.clone()).with_ansi(false).init();

    let ctx = TestContext::new("secrets").await;
    support::install_crds(&ctx.client).await;
    let operator = Operator::start(&ctx.namespace, |_| {}).await;
    let server =
        NatsServer::start(&support::tools(), "authorization { users: [ {user: app, password: Pa55-right-0ne} ] }")
            .await
            .expect("a server");
    let secrets: [(&str, &str, &str); 3] = [
        ("right", "password", "Pa55-right-0ne"),
        ("wrong", "password", "Pa55-wr0ng-0ne"),
        ("token", "token", "T0ken-never-seen"),
    ];
    for (name, key, value) in secrets {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"user": "app", key: value}});
        ctx.api::<Secret>().patch(name, &PatchParams::apply("t"), &Patch::Apply(secret)).await.expect("secret");
    }
    let connections: Api<NatsConnection> = ctx.api();
    let streams: Api<Stream> = ctx.api();
    let specs = [
        ("right", json!({"userPassword": {"secretName": "right"}})),
        ("wrong", json!({"userPassword": {"secretName": "wrong"}})),
        ("token", json!({"token": {"name": "token", "key": "token"}})),
    ];
    for (name, auth) in specs {
        let object = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "NatsConnection", "metadata": {"name": name},
            "spec": {"servers": [server.url()], "auth": auth}});
        connections.patch(name, &PatchParams::apply("t"), &Patch::Apply(object)).await.expect("connection");
        let stream = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": name},
            "spec": {"name": ctx.unique(&name.to_uppercase()), "connectionRef": {"name": name}}});
        streams.patch(name, &PatchParams::apply("t"), &Patch::Apply(stream)).await.expect("stream");
    }
    wait_condition(&connections, "right", "Ready", "True").await;
    wait_condition(&connections, "wrong", "Ready", "False").await;
    wait_condition(&connections, "token", "Ready", "False").await;
    wait_condition(&streams, "right", "Ready", "True").await;
    wait_condition(&streams, "wrong", "Ready", "False").await;
    operator.stop().await;

    let logs = String::from_utf8_lossy(&captured.0.lock().expect("log buffer")).into_owned();
    let objects = format!(
        "{}{}{}",
        serde_json::to_string(&connections.list(&Default::default()).await.expect("list").items).expect("json"),
        serde_json::to_string(&streams.list(&Default::default()).await.expect("list").items).expect("json"),
        serde_json::to_string(&ctx.api::<Event>().list(&Default::default()).await.expect("events").items)
            .expect("json"),
    );
    assert!(logs.contains("connected to NATS"), "the capture works: {} bytes", logs.len());
    for (_, _, value) in secrets {
        assert!(!logs.contains(value), "{value} appears in the logs");
        assert!(!objects.contains(value), "{value} appears in a status or event");
    }
}
