//! What Streams and Consumers refer to, as watched: NatsConnections (the
//! NatsConnection controller's own store) and the Secrets they name. A reconcile
//! dereferences its `connectionRef` here without asking the apiserver, and a change
//! wakes who uses it: a Secret's change its NatsConnections; a NatsConnection whose
//! settings now differ from what its users were given, those users.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use futures::channel::mpsc;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::{Decoded, Store};
use crate::api::connection::{NatsConnection, NatsConnectionSpec};
use crate::api::consumer::Consumer;
use crate::api::stream::{LocalRef, Stream};
use crate::connection::{Named, ResolveError, Secrets, resolve};
use crate::nats::NatsSettings;

/// A kind whose objects may name a NatsConnection.
pub trait UsesConnection: kube::Resource<DynamicType = ()> + Sized {
    fn connection_ref(&self) -> Option<&LocalRef>;
    /// Where the kind's store is kept once its controller runs.
    fn store(references: &References) -> &OnceLock<Store<Self>>;
}

impl UsesConnection for Stream {
    fn connection_ref(&self) -> Option<&LocalRef> {
        self.spec.connection_ref.as_ref()
    }
    fn store(references: &References) -> &OnceLock<Store<Self>> {
        &references.streams
    }
}

impl UsesConnection for Consumer {
    fn connection_ref(&self) -> Option<&LocalRef> {
        self.spec.connection_ref.as_ref()
    }
    fn store(references: &References) -> &OnceLock<Store<Self>> {
        &references.consumers
    }
}

/// The watched NatsConnections and Secrets, and what each connection's users were given.
pub struct References {
    pub secrets: Secrets,
    pub connections: OnceLock<Store<NatsConnection>>,
    streams: OnceLock<Store<Stream>>,
    consumers: OnceLock<Store<Consumer>>,
    /// What users of each NatsConnection were given, and how often it resolved itself.
    given: Mutex<Given>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Named>>>,
}

#[derive(Default)]
struct Given {
    /// The settings users of each NatsConnection last resolved (`None`: they failed to).
    settings: HashMap<Named, Option<NatsSettings>>,
    /// How many times each NatsConnection resolved its own settings: a user whose
    /// resolution overlapped one of those resolves again, since the connection's
    /// check of what users were given may have come before the user's record of it.
    resolved: HashMap<Named, u64>,
}

impl References {
    pub fn new(client: kube::Client, shutdown: tokio_util::sync::CancellationToken) -> Self {
        Self {
            secrets: Secrets::new(client, shutdown),
            connections: OnceLock::new(),
            streams: OnceLock::new(),
            consumers: OnceLock::new(),
            given: Mutex::default(),
            subscribers: Mutex::default(),
        }
    }

    /// Keeps the store of `K`'s controller, for [`Self::users`].
    pub fn keep<K: UsesConnection>(&self, store: Store<K>) {
        let _ = K::store(self).set(store);
    }

    /// The settings of the NatsConnection `name` in `namespace`, for one of its users.
    /// The NatsConnection store must be synced.
    pub async fn settings(&self, namespace: &str, name: &str) -> Result<NatsSettings, ResolveError> {
        let named = (namespace.to_owned(), name.to_owned());
        let resolved = |given: &Given| given.resolved.get(&named).copied().unwrap_or(0);
        let mut before = resolved(&self.given.lock().expect("given settings"));
        loop {
            let settings = self.resolve_named(namespace, name).await;
            let mut given = self.given.lock().expect("given settings");
            given.settings.insert(named.clone(), settings.as_ref().ok().cloned());
            let now = resolved(&given);
            if now == before {
                return settings;
            }
            before = now;
        }
    }

    async fn resolve_named(&self, namespace: &str, name: &str) -> Result<NatsSettings, ResolveError> {
        let found = self.connections.get().and_then(|store| store.get(&ObjectRef::new(name).within(namespace)));
        let connection = found.ok_or_else(|| ResolveError::NotFound(name.to_owned()))?;
        match &connection.object {
            Ok(connection) => resolve(&self.secrets, namespace, &connection.spec).await,
            Err(error) => Err(ResolveError::Unreadable(name.to_owned(), error.to_string())),
        }
    }

    /// What the NatsConnection itself resolved to: its users are told when it is not
    /// what they were given. The Secrets it names are watched from now on.
    pub async fn resolve_own(&self, connection: &NatsConnection, user: &str) -> Result<NatsSettings, ResolveError> {
        let namespace = connection.namespace().unwrap_or_default();
        self.secrets.named_by(user, secrets_named(&namespace, &connection.spec));
        let settings = resolve(&self.secrets, &namespace, &connection.spec).await;
        let named = (namespace, connection.name_any());
        let stale = {
            let mut given = self.given.lock().expect("given settings");
            *given.resolved.entry(named.clone()).or_default() += 1;
            given.settings.get(&named).is_some_and(|given| *given != settings.as_ref().ok().cloned())
        };
        if stale {
            self.subscribers
                .lock()
                .expect("connection subscribers")
                .retain(|s| s.unbounded_send(named.clone()).is_ok());
        }
        settings
    }

    /// The NatsConnection, which `user` stands for in the pool, is gone: its Secrets
    /// are not watched for it any more.
    pub fn forget(&self, connection: &NatsConnection, user: &str) {
        self.secrets.named_by(user, BTreeSet::new());
        let named = (connection.namespace().unwrap_or_default(), connection.name_any());
        let mut given = self.given.lock().expect("given settings");
        given.settings.remove(&named);
        given.resolved.remove(&named);
    }

    /// The NatsConnections whose users' settings may have changed.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Named> {
        let (sender, receiver) = mpsc::unbounded();
        self.subscribers.lock().expect("connection subscribers").push(sender);
        receiver
    }

    /// The Streams and Consumers in `namespace` that name the NatsConnection `name`,
    /// or cannot be read (and so may name it), as `Kind name`.
    pub fn users(&self, namespace: &str, name: &str) -> Vec<String> {
        let mut users = naming(self.streams.get(), namespace, name);
        users.extend(naming(self.consumers.get(), namespace, name));
        users
    }
}

/// The objects of `store` in `namespace` that name the NatsConnection `name` (or
/// cannot be read), as `Kind name`.
fn naming<K: UsesConnection + Clone>(store: Option<&Store<K>>, namespace: &str, name: &str) -> Vec<String> {
    let Some(store) = store else { return Vec::new() };
    referring(store, namespace, name).map(|object| format!("{} {}", K::kind(&()), object.name_any())).collect()
}

/// The objects of `store` in `namespace` whose `connectionRef` is `name`; an object
/// that cannot be read counts, since it may.
pub fn referring<'s, K: UsesConnection + Clone>(
    store: &'s Store<K>,
    namespace: &'s str,
    name: &'s str,
) -> impl Iterator<Item = std::sync::Arc<Decoded<K>>> + 's {
    store.state().into_iter().filter(move |object| {
        object.namespace().as_deref() == Some(namespace)
            && object.object.as_ref().map_or(true, |o| o.connection_ref().is_some_and(|r| r.name == name))
    })
}

/// The Secrets a NatsConnection names.
pub fn secrets_named(namespace: &str, spec: &NatsConnectionSpec) -> BTreeSet<Named> {
    let mut names = BTreeSet::new();
    for auth in [&spec.auth, &spec.system_auth].into_iter().flatten() {
        names.extend(auth.user_password.as_ref().map(|up| up.secret_name.clone()));
        for key in [&auth.token, &auth.nkey, &auth.creds].into_iter().flatten() {
            names.insert(key.name.clone());
        }
    }
    if let Some(tls) = &spec.tls {
        names.extend(tls.ca.as_ref().map(|ca| ca.name.clone()));
        names.extend(tls.client_secret_name.clone());
    }
    names.into_iter().map(|name| (namespace.to_owned(), name)).collect()
}
