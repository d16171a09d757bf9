//! NatsConnection on the test ground: authentication and TLS from Secrets, clear
//! conditions for what goes wrong, streams reconciled through it on a second NATS
//! system, and deletion held while objects refer to it.

mod support;

use std::collections::BTreeMap;

use jetway::api::connection::NatsConnection;
use jetway::api::stream::Stream;
use jetway_testground::NatsServer;
use jetway_testground::pki::{Ca, Usage};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::{EVENTUALLY, Operator, POLL, TestContext, condition, wait_condition, wait_until};

struct Fixture {
    ctx: TestContext,
    operator: Operator,
    connections: Api<NatsConnection>,
    streams: Api<Stream>,
}

impl Fixture {
    async fn new(test: &str) -> Self {
        Self::with(test, |_| {}).await
    }

    async fn with(test: &str, configure: impl FnOnce(&mut jetway::run::Config)) -> Self {
        let ctx = TestContext::new(test).await;
        support::install_crds(&ctx.client).await;
        let operator = Operator::start(&ctx.namespace, configure).await;
        Self { connections: ctx.api(), streams: ctx.api(), ctx, operator }
    }

    /// The Stream `name`'s Ready reason once Ready has `status`.
    async fn stream_reason(&self, name: &str, status: &str) -> String {
        let object = wait_condition(&self.streams, name, "Ready", status).await;
        condition(&object, "Ready").expect("Ready").reason.clone()
    }

    async fn secret(&self, name: &str, data: &[(&str, &str)]) {
        let data: BTreeMap<String, String> = data.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data});
        self.ctx
            .api::<Secret>()
            .patch(name, &PatchParams::apply("jetway-tests"), &Patch::Apply(secret))
            .await
            .expect("a secret");
    }

    async fn connection(&self, name: &str, spec: Value) {
        let object = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "NatsConnection", "metadata": {"name": name}, "spec": spec});
        self.connections
            .patch(name, &PatchParams::apply("jetway-tests"), &Patch::Apply(object))
            .await
            .expect("a connection");
    }

    async fn stream(&self, name: &str, stream_name: &str, connection: &str) {
        let object = json!({"apiVersion": "jetway.dev/v1alpha1", "kind": "Stream", "metadata": {"name": name},
            "spec": {"name": stream_name, "connectionRef": {"name": connection}}});
        self.streams.patch(name, &PatchParams::apply("jetway-tests"), &Patch::Apply(object)).await.expect("a stream");
    }

    /// The Ready condition's reason once it has `status`.
    async fn ready_reason(&self, name: &str, status: &str) -> (String, String) {
        let object = wait_condition(&self.connections, name, "Ready", status).await;
        let ready = condition(&object, "Ready").expect("Ready");
        (ready.reason.clone(), ready.message.clone())
    }
}

async fn exists_on(server: &NatsServer, user: &str, password: &str, stream: &str) -> bool {
    let client = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(server.url())
        .await
        .expect("connecting as the test");
    async_nats::jetstream::new(client).get_stream(stream).await.is_ok()
}

#[tokio::test]
async fn user_and_password_from_a_secret_reach_a_second_nats_system_and_a_wrong_one_says_so() {
    let fx = Fixture::new("conn-user-password").await;
    let server = NatsServer::start(&support::tools(), "authorization { users: [ {user: app, password: s3cret-pw} ] }")
        .await
        .expect("a nats-server with users");
    fx.secret("app", &[("user", "app"), ("password", "s3cret-pw")]).await;
    fx.secret("wrong", &[("user", "app"), ("password", "not-it")]).await;
    fx.connection("second", json!({"servers": [server.url()], "auth": {"userPassword": {"secretName": "app"}}})).await;
    fx.connection("wrong", json!({"servers": [server.url()], "auth": {"userPassword": {"secretName": "wrong"}}})).await;

    let ready = wait_condition(&fx.connections, "second", "Ready", "True").await;
    let status = ready.status.expect("status");
    assert!(status.server_version.is_some_and(|v| v.starts_with("2.")), "the server version is shown");
    assert!(status.account.is_some(), "account usage is shown");

    let (reason, message) = fx.ready_reason("wrong", "False").await;
    assert_eq!(reason, "AuthorizationViolation", "{message}");
    assert!(!message.contains("not-it"), "the password never appears: {message}");
    let whose = format!("authorization violation for the user in Secret {}/wrong key user", fx.ctx.namespace);
    assert!(message.contains(&whose), "says whose credentials: {message}");

    let name = fx.ctx.unique("SECOND");
    fx.stream("on-second", &name, "second").await;
    wait_condition(&fx.streams, "on-second", "Ready", "True").await;
    assert!(exists_on(&server, "app", "s3cret-pw", &name).await, "created on the second system");
    assert!(fx.ctx.jetstream.get_stream(&name).await.is_err(), "and not on the default one");

    let failing = fx.ctx.unique("FAILING");
    fx.stream("on-wrong", &failing, "wrong").await;
    let stream = wait_condition(&fx.streams, "on-wrong", "Ready", "False").await;
    assert_eq!(condition(&stream, "Ready").expect("Ready").reason, "NatsUnavailable");
    fx.operator.stop().await;
}

#[tokio::test]
async fn a_token_works_and_a_missing_secret_or_key_is_named() {
    let fx = Fixture::new("conn-token").await;
    let server = NatsServer::start(&support::tools(), "authorization { token: t0ken-value }").await.expect("a server");
    fx.secret("token", &[("token", "t0ken-value")]).await;
    fx.connection("token", json!({"servers": [server.url()], "auth": {"token": {"name": "token", "key": "token"}}}))
        .await;
    fx.connection("no-key", json!({"servers": [server.url()], "auth": {"token": {"name": "token", "key": "missing"}}}))
        .await;
    fx.connection(
        "no-secret",
        json!({"servers": [server.url()], "auth": {"token": {"name": "absent", "key": "token"}}}),
    )
    .await;
    wait_condition(&fx.connections, "token", "Ready", "True").await;
    let (reason, message) = fx.ready_reason("no-key", "False").await;
    assert_eq!(reason, "SecretKeyMissing");
    assert!(message.contains("token") && message.contains("missing"), "{message}");
    let (reason, message) = fx.ready_reason("no-secret", "False").await;
    assert_eq!(reason, "SecretNotFound");
    assert!(message.contains("absent"), "{message}");
    fx.operator.stop().await;
}

#[tokio::test]
async fn tls_with_a_ca_from_a_secret_connects_and_an_unknown_ca_is_named() {
    let fx = Fixture::new("conn-tls").await;
    let dir = tempfile::tempdir().expect("a dir");
    let ca = Ca::new("test-nats-ca").expect("a CA");
    ca.issue("nats", None, &["127.0.0.1", "localhost"], Usage::Server)
        .expect("a cert")
        .write(dir.path(), "server")
        .expect("files");
    let config = format!(
        "tls {{ cert_file: {:?}, key_file: {:?} }}",
        dir.path().join("server.crt").display().to_string(),
        dir.path().join("server.key").display().to_string()
    );
    let server = NatsServer::start(&support::tools(), &config).await.expect("a TLS nats-server");
    let other = Ca::new("some-other-ca").expect("a CA");
    fx.secret("ca", &[("ca.crt", &ca.cert_pem())]).await;
    fx.secret("other-ca", &[("ca.crt", &other.cert_pem())]).await;
    let url = format!("tls://127.0.0.1:{}", server.port());
    fx.connection("tls", json!({"servers": [url], "tls": {"ca": {"name": "ca", "key": "ca.crt"}}})).await;
    fx.connection("unknown-ca", json!({"servers": [url], "tls": {"ca": {"name": "other-ca", "key": "ca.crt"}}})).await;
    wait_condition(&fx.connections, "tls", "Ready", "True").await;
    let (reason, message) = fx.ready_reason("unknown-ca", "False").await;
    assert_eq!(reason, "TlsFailed");
    let named = format!("not signed by the CA in Secret {}/other-ca key ca.crt", fx.ctx.namespace);
    assert!(message.contains(&named), "says which CA: {message}");

    // A server whose certificate names only nats.internal, reached by its address.
    ca.issue("nats", None, &["nats.internal"], Usage::Server)
        .expect("a cert")
        .write(dir.path(), "named")
        .expect("files");
    let config = format!(
        "tls {{ cert_file: {:?}, key_file: {:?} }}",
        dir.path().join("named.crt").display().to_string(),
        dir.path().join("named.key").display().to_string()
    );
    let named = NatsServer::start(&support::tools(), &config).await.expect("a TLS nats-server");
    let url = format!("tls://127.0.0.1:{}", named.port());
    let ca_ref = json!({"name": "ca", "key": "ca.crt"});
    fx.connection("named", json!({"servers": [url], "tls": {"ca": ca_ref, "serverName": "nats.internal"}})).await;
    fx.connection("unnamed", json!({"servers": [url], "tls": {"ca": ca_ref}})).await;
    wait_condition(&fx.connections, "named", "Ready", "True").await;
    let (reason, message) = fx.ready_reason("unnamed", "False").await;
    assert_eq!(reason, "TlsFailed", "the address is not the certificate's name");
    assert!(message.contains("not valid for the host in spec.servers"), "says which name: {message}");
    fx.operator.stop().await;
}

#[tokio::test]
async fn a_connection_in_use_is_deleted_only_once_nothing_refers_to_it() {
    let fx = Fixture::new("conn-in-use").await;
    let server = NatsServer::start(&support::tools(), "").await.expect("a server");
    fx.connection("used", json!({"servers": [server.url()]})).await;
    wait_condition(&fx.connections, "used", "Ready", "True").await;
    fx.stream("user", &fx.ctx.unique("USER"), "used").await;
    wait_condition(&fx.streams, "user", "Ready", "True").await;

    assert_eq!(support::metric(fx.operator.http_addr, "jetway_nats_connections").await, Some(1.0), "one pooled client");
    fx.connections.delete("used", &DeleteParams::default()).await.expect("deleting");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(fx.connections.get_opt("used").await.expect("get").is_some(), "held while the Stream refers to it");
    support::wait_event(&fx.ctx.client, &fx.ctx.namespace, "used", "InUse").await;

    fx.streams.delete("user", &DeleteParams::default()).await.expect("deleting the stream object");
    wait_until("the connection to go", EVENTUALLY, POLL, || async {
        Ok(fx.connections.get_opt("used").await?.is_none().then_some(()))
    })
    .await
    .expect("deleted once unused");
    wait_until("the pooled client to be closed", EVENTUALLY, POLL, || async {
        Ok((support::metric(fx.operator.http_addr, "jetway_nats_connections").await == Some(0.0)).then_some(()))
    })
    .await
    .expect("closed when nothing uses it");
    fx.operator.stop().await;
}

#[tokio::test]
async fn an_nkey_seed_authenticates_and_a_fixed_secret_is_picked_up_without_a_restart() {
    let fx = Fixture::new("conn-nkey").await;
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("a seed");
    let config = format!("authorization {{ users: [ {{nkey: {}}} ] }}", user.public_key());
    let server = NatsServer::start(&support::tools(), &config).await.expect("a server with an nkey user");
    let stranger = nkeys::KeyPair::new_user().seed().expect("another seed");
    fx.secret("seed", &[("seed", &stranger)]).await;
    fx.connection("nkey", json!({"servers": [server.url()], "auth": {"nkey": {"name": "seed", "key": "seed"}}})).await;
    let (reason, message) = fx.ready_reason("nkey", "False").await;
    assert_eq!(reason, "AuthorizationViolation", "{message}");

    // Rotating the Secret to the right seed is picked up by the running operator.
    fx.secret("seed", &[("seed", &seed)]).await;
    wait_condition(&fx.connections, "nkey", "Ready", "True").await;
    fx.operator.stop().await;
}

#[tokio::test]
async fn a_jetstream_domain_is_addressed() {
    let fx = Fixture::new("conn-domain").await;
    let server =
        NatsServer::start(&support::tools(), "jetstream { domain: hub }").await.expect("a server with a domain");
    fx.connection("hub", json!({"servers": [server.url()], "domain": "hub"})).await;
    wait_condition(&fx.connections, "hub", "Ready", "True").await;
    let name = fx.ctx.unique("HUB");
    fx.stream("on-hub", &name, "hub").await;
    wait_condition(&fx.streams, "on-hub", "Ready", "True").await;
    let client = async_nats::connect(server.url()).await.expect("connecting");
    let hub = async_nats::jetstream::with_domain(client, "hub");
    hub.get_stream(&name).await.expect("the stream, through the domain's API");
    fx.operator.stop().await;
}

#[tokio::test]
async fn creds_authenticate_against_a_server_in_operator_jwt_mode() {
    let fx = Fixture::new("conn-creds").await;
    let dir = tempfile::tempdir().expect("a dir");
    let minted =
        std::process::Command::new(support::tools().path("jetway-jwt")).arg(dir.path()).status().expect("jetway-jwt");
    assert!(minted.success(), "minting the operator, accounts and user");
    let config = std::fs::read_to_string(dir.path().join("server.conf")).expect("server.conf");
    let creds = std::fs::read_to_string(dir.path().join("user.creds")).expect("user.creds");
    let server = NatsServer::start(&support::tools(), &config).await.expect("a server in operator mode");
    fx.secret("creds", &[("user.creds", &creds)]).await;
    fx.connection("jwt", json!({"servers": [server.url()], "auth": {"creds": {"name": "creds", "key": "user.creds"}}}))
        .await;
    fx.connection("anonymous", json!({"servers": [server.url()]})).await;
    wait_condition(&fx.connections, "jwt", "Ready", "True").await;
    let (reason, _) = fx.ready_reason("anonymous", "False").await;
    assert_eq!(reason, "AuthorizationViolation");
    let name = fx.ctx.unique("JWT");
    fx.stream("with-creds", &name, "jwt").await;
    wait_condition(&fx.streams, "with-creds", "Ready", "True").await;
    fx.operator.stop().await;
}

#[tokio::test]
async fn mutual_tls_with_the_handshake_first_uses_a_client_certificate_from_a_secret() {
    let fx = Fixture::new("conn-mtls").await;
    let dir = tempfile::tempdir().expect("a dir");
    let ca = Ca::new("test-mtls-ca").expect("a CA");
    ca.issue("nats", None, &["127.0.0.1"], Usage::Server).expect("a cert").write(dir.path(), "server").expect("files");
    std::fs::write(dir.path().join("ca.crt"), ca.cert_pem()).expect("ca file");
    let file = |name: &str| dir.path().join(name).display().to_string();
    let config = format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true, handshake_first: true }}",
        file("server.crt"),
        file("server.key"),
        file("ca.crt")
    );
    let server = NatsServer::start(&support::tools(), &config).await.expect("an mTLS nats-server");
    let client = ca.issue("jetway", None, &[], Usage::Client).expect("a client cert");
    fx.secret("ca", &[("ca.crt", &ca.cert_pem())]).await;
    fx.secret("client", &[("tls.crt", &client.cert_pem), ("tls.key", &client.key_pem)]).await;
    let url = format!("tls://127.0.0.1:{}", server.port());
    let tls = json!({"ca": {"name": "ca", "key": "ca.crt"}, "clientSecretName": "client", "handshakeFirst": true});
    fx.connection("mtls", json!({"servers": [url], "tls": tls})).await;
    let without = json!({"ca": {"name": "ca", "key": "ca.crt"}, "handshakeFirst": true});
    fx.connection("no-client-cert", json!({"servers": [url], "tls": without})).await;
    wait_condition(&fx.connections, "mtls", "Ready", "True").await;
    let (reason, message) = fx.ready_reason("no-client-cert", "False").await;
    assert_ne!(reason, "Connected", "{message}");
    let name = fx.ctx.unique("MTLS");
    fx.stream("over-mtls", &name, "mtls").await;
    wait_condition(&fx.streams, "over-mtls", "Ready", "True").await;
    fx.operator.stop().await;
}

#[tokio::test]
async fn a_late_connection_and_a_rotated_secret_reach_their_stream_without_a_resync_or_a_secret_read() {
    let fx =
        Fixture::with("conn-watched", |config| config.controllers.resync = std::time::Duration::from_secs(600)).await;
    let users = "authorization { users: [ {user: app, password: first-pw}, {user: next, password: second-pw} ] }";
    let server = NatsServer::start(&support::tools(), users).await.expect("a nats-server with users");
    let client = &fx.ctx.client;
    // The tests in this file read no Secret; the apiserver counts every reader's GETs.
    let reads = || support::apiserver_requests(client, "secrets", "", &["GET"]);
    let reads_before = reads().await;

    // A Stream that names a connection not made yet waits, saying so; the connection's
    // arrival wakes it (the resync is ten minutes away).
    let name = fx.ctx.unique("WATCHED");
    fx.stream("watched", &name, "later").await;
    assert_eq!(fx.stream_reason("watched", "False").await, "NatsConnectionNotFound");
    fx.secret("app", &[("user", "app"), ("password", "first-pw")]).await;
    fx.connection("later", json!({"servers": [server.url()], "auth": {"userPassword": {"secretName": "app"}}})).await;
    assert_eq!(fx.stream_reason("watched", "True").await, "InSync");
    assert!(exists_on(&server, "app", "first-pw", &name).await, "created through the late connection");

    // A password the server refuses: the connection and the Stream both say so.
    fx.secret("app", &[("user", "app"), ("password", "wrong-pw")]).await;
    assert_eq!(fx.ready_reason("later", "False").await.0, "AuthorizationViolation");
    assert_eq!(fx.stream_reason("watched", "False").await, "NatsUnavailable");
    // Rotated to another user: both are Ready again, on a client with the new credentials.
    fx.secret("app", &[("user", "next"), ("password", "second-pw")]).await;
    wait_condition(&fx.connections, "later", "Ready", "True").await;
    assert_eq!(fx.stream_reason("watched", "True").await, "InSync");

    // Dereferenced from watches: no reconcile read a Secret.
    assert_eq!(reads().await - reads_before, 0.0, "GETs of Secrets, by the apiserver's count");
    fx.operator.stop().await;
}

#[tokio::test]
async fn dead_letters_keep_being_forwarded_after_the_connections_secret_is_rotated() {
    use async_nats::jetstream::AckKind;
    use futures::StreamExt;
    let fx = Fixture::new("conn-dead-letters").await;
    let users = "authorization { users: [ {user: app, password: first-pw}, {user: next, password: second-pw} ] }";
    let server = NatsServer::start(&support::tools(), users).await.expect("a nats-server with users");
    fx.secret("app", &[("user", "app"), ("password", "first-pw")]).await;
    fx.connection("rotating", json!({"servers": [server.url()], "auth": {"userPassword": {"secretName": "app"}}}))
        .await;
    let (work, dead) = (fx.ctx.unique("WORK"), fx.ctx.unique("DEAD"));
    let apply = |kind: &'static str, name: &'static str, spec: Value| {
        let object =
            json!({"apiVersion": "jetway.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec});
        let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
            fx.ctx.client.clone(),
            &fx.ctx.namespace,
            &kube::api::ApiResource {
                group: "jetway.dev".into(),
                version: "v1alpha1".into(),
                api_version: "jetway.dev/v1alpha1".into(),
                kind: kind.into(),
                plural: format!("{}s", kind.to_lowercase()),
            },
        );
        async move { api.patch(name, &PatchParams::apply("jetway-tests"), &Patch::Apply(object)).await.expect(name) }
    };
    let connection = json!({"name": "rotating"});
    apply("Stream", "work", json!({"name": work, "subjects": ["work"], "connectionRef": connection})).await;
    apply("Stream", "dead", json!({"name": dead, "subjects": ["dead"], "connectionRef": connection})).await;
    let consumer = json!({"streamName": work, "durableName": "worker", "maxDeliver": 1, "ackWait": "1s",
        "deadLetter": {"subject": "dead"}, "connectionRef": connection});
    apply("Consumer", "worker", consumer).await;
    let consumers: Api<jetway::api::consumer::Consumer> = fx.ctx.api();
    wait_condition(&consumers, "worker", "Ready", "True").await;

    let client = async_nats::ConnectOptions::with_user_and_password("next".into(), "second-pw".into())
        .connect(server.url())
        .await
        .expect("connecting as the test");
    let jetstream = async_nats::jetstream::new(client);
    // One message given up on (its only delivery is nak'ed), then the dead letters counted.
    let give_up_on = |payload: &'static str, letters: u64| {
        let jetstream = jetstream.clone();
        let (work, dead) = (work.clone(), dead.clone());
        async move {
            jetstream.publish("work", payload.into()).await.expect("publish").await.expect("ack");
            let stream = jetstream.get_stream(&work).await.expect("the stream");
            let consumer =
                stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>("worker").await.unwrap();
            wait_until(&format!("{letters} dead letters"), EVENTUALLY, POLL, || async {
                let mut batch =
                    consumer.fetch().max_messages(10).expires(std::time::Duration::from_millis(300)).messages().await?;
                while let Some(message) = batch.next().await {
                    message
                        .map_err(|e| anyhow::anyhow!(e))?
                        .ack_with(AckKind::Nak(None))
                        .await
                        .map_err(|e| anyhow::anyhow!(e))?;
                }
                let mut dead = jetstream.get_stream(&dead).await?;
                Ok((dead.info().await?.state.messages >= letters).then_some(()))
            })
            .await
            .expect("the dead letter");
        }
    };
    give_up_on("before", 1).await;

    // The Secret rotated to another user: the old client is closed, a new one used.
    fx.secret("app", &[("user", "next"), ("password", "second-pw")]).await;
    let monitor: std::net::SocketAddr = server.monitor_url().trim_start_matches("http://").parse().unwrap();
    wait_until("the operator on its new client only", EVENTUALLY, POLL, || async {
        let (_, connz) = support::http_get(monitor, "/connz?auth=true").await?;
        let connz: Value = serde_json::from_str(&connz)?;
        let users: Vec<&str> = connz["connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"] == "jetway")
            .filter_map(|c| c["authorized_user"].as_str())
            .collect();
        Ok((!users.is_empty() && users.iter().all(|user| *user == "next")).then_some(()))
    })
    .await
    .unwrap();
    give_up_on("after", 2).await;
    let letters = jetstream.get_stream(&dead).await.unwrap();
    let last = letters.get_raw_message(2).await.expect("the second dead letter");
    assert_eq!(&last.payload[..], b"after", "forwarded through the rotated connection");
    fx.operator.stop().await;
}
