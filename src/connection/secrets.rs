//! The Secrets NatsConnections name, watched one by one (a watch selected by name, so
//! the operator holds no Secret it was not pointed at): resolving a connection reads
//! them here instead of asking the apiserver, and a change is news for the
//! NatsConnections that name the Secret.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ResolveError;

/// `(namespace, name)` of a namespaced object.
pub type Named = (String, String);

/// What a Secret holds: its data, without its metadata.
pub type SecretData = BTreeMap<String, ByteString>;

/// How long a first read of a Secret may take before resolving fails with the reason.
const FIRST_READ: Duration = Duration::from_secs(10);

/// What a Secret's watch has seen so far.
#[derive(Clone)]
enum Seen {
    /// The first list has not answered yet.
    Nothing,
    /// The Secret as last seen; `None` when it does not exist.
    Listed(Option<Arc<SecretData>>),
    /// The first list failed, with this error; the watch keeps trying.
    Failed(String),
}

struct Watch {
    seen: watch::Receiver<Seen>,
    stop: CancellationToken,
}

/// One watch per Secret named, and who is told of changes.
pub struct Secrets {
    client: kube::Client,
    watches: Mutex<HashMap<Named, Watch>>,
    /// The Secrets each user (a NatsConnection's key) names.
    named_by: Mutex<HashMap<String, BTreeSet<Named>>>,
    subscribers: Subscribers,
    /// Ends every watch: the operator stops, or loses its lease.
    shutdown: CancellationToken,
}

type Subscribers = Arc<Mutex<Vec<mpsc::UnboundedSender<Named>>>>;

impl Secrets {
    pub fn new(client: kube::Client, shutdown: CancellationToken) -> Self {
        let (watches, named_by, subscribers) = Default::default();
        Self { client, watches, named_by, subscribers, shutdown }
    }

    /// The Secrets that changed after they were first read (or first failed to be).
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Named> {
        let (sender, receiver) = mpsc::unbounded();
        self.subscribers.lock().expect("secret subscribers").push(sender);
        receiver
    }

    /// The data of the Secret `name` in `namespace`; `None` when it does not exist.
    pub async fn data(&self, namespace: &str, name: &str) -> Result<Option<Arc<SecretData>>, ResolveError> {
        let mut seen = self.watch((namespace.to_owned(), name.to_owned()));
        let unreadable = |error: String| ResolveError::SecretUnreadable { secret: name.to_owned(), error };
        let first = tokio::time::timeout(FIRST_READ, seen.wait_for(|seen| !matches!(seen, Seen::Nothing))).await;
        let first = match first {
            Ok(Ok(seen)) => seen.clone(),
            Ok(Err(_)) => return Err(unreadable("the watch stopped".into())),
            Err(_) => return Err(unreadable(format!("no answer in {FIRST_READ:?}"))),
        };
        match first {
            Seen::Listed(data) => Ok(data),
            Seen::Failed(error) => Err(unreadable(error)),
            Seen::Nothing => Err(unreadable("the watch stopped".into())),
        }
    }

    /// From now on `user` names exactly `secrets`; a Secret no user names any more
    /// is no longer watched.
    pub fn named_by(&self, user: &str, secrets: BTreeSet<Named>) {
        let mut named_by = self.named_by.lock().expect("secrets named");
        if secrets.is_empty() {
            named_by.remove(user);
        } else {
            named_by.insert(user.to_owned(), secrets);
        }
        let named: BTreeSet<&Named> = named_by.values().flatten().collect();
        self.watches.lock().expect("secret watches").retain(|secret, watch| {
            let keep = named.contains(secret);
            if !keep {
                watch.stop.cancel();
            }
            keep
        });
    }

    /// The watch of `secret`, started if there is none.
    fn watch(&self, secret: Named) -> watch::Receiver<Seen> {
        let mut watches = self.watches.lock().expect("secret watches");
        if let Some(watch) = watches.get(&secret) {
            return watch.seen.clone();
        }
        let (sender, seen) = watch::channel(Seen::Nothing);
        let stop = self.shutdown.child_token();
        let api = kube::Api::<Secret>::namespaced(self.client.clone(), &secret.0);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", secret.1));
        tokio::spawn(follow(api, config, sender, self.subscribers.clone(), secret.clone(), stop.clone()));
        watches.insert(secret, Watch { seen: seen.clone(), stop });
        seen
    }
}

/// Keeps `seen` up to date with one Secret until `stop`, telling `changed` of every
/// change after the first answer.
async fn follow(
    api: kube::Api<Secret>,
    config: watcher::Config,
    seen: watch::Sender<Seen>,
    changed: Subscribers,
    secret: Named,
    stop: CancellationToken,
) {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let events = watcher(api, config).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut listing: Option<Arc<SecretData>> = None;
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let now = match event {
            Ok(watcher::Event::Init) => {
                listing = None;
                continue;
            }
            Ok(watcher::Event::InitApply(secret)) => {
                listing = Some(Arc::new(secret.data.unwrap_or_default()));
                continue;
            }
            Ok(watcher::Event::InitDone) => listing.take(),
            Ok(watcher::Event::Apply(secret)) => Some(Arc::new(secret.data.unwrap_or_default())),
            Ok(watcher::Event::Delete(_)) => None,
            Err(error) => {
                seen.send_if_modified(|seen| match seen {
                    Seen::Nothing | Seen::Failed(_) => {
                        *seen = Seen::Failed(error.to_string());
                        true
                    }
                    Seen::Listed(_) => false,
                });
                continue;
            }
        };
        let mut news = false;
        seen.send_if_modified(|seen| {
            let modified = match seen {
                Seen::Listed(before) => *before != now,
                Seen::Nothing | Seen::Failed(_) => true,
            };
            news = !matches!(seen, Seen::Nothing) && modified;
            *seen = Seen::Listed(now);
            modified
        });
        if news {
            changed.lock().expect("secret subscribers").retain(|s| s.unbounded_send(secret.clone()).is_ok());
        }
    }
}
