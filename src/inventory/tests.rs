//! The index of who watches which place: what keeps a round's cost proportional to
//! what it read, not to the number of objects.

use std::sync::Arc;
use std::time::Duration;

use super::{Entry, Intervals, Inventory, Watched, WatchedStream};
use crate::metrics::Metrics;

async fn inventory() -> (Inventory, async_nats::jetstream::Context) {
    let intervals =
        Intervals { lag: Duration::from_secs(1), metrics: Duration::from_secs(15), drift: Duration::from_secs(30) };
    // Never reached: the index does not talk to the server.
    let client = async_nats::ConnectOptions::new().retry_on_initial_connect().connect("127.0.0.1:9").await;
    let js = async_nats::jetstream::new(client.expect("a client that connects later"));
    (Inventory::new(Arc::new(Metrics::new()), intervals), js)
}

fn consumer(js: &async_nats::jetstream::Context, stream: &str, name: &str) -> Watched {
    Watched {
        namespace: "ns".into(),
        connection: String::new(),
        jetstream: js.clone(),
        system: None,
        stream: stream.into(),
        consumer: name.into(),
    }
}

fn place(stream: &str) -> (String, String) {
    (String::new(), stream.to_owned())
}

#[tokio::test]
async fn places_follow_their_watchers_and_go_with_the_last() {
    let (inventory, js) = inventory().await;
    inventory.watch("ns/a", consumer(&js, "S", "a"));
    inventory.watch("ns/b", consumer(&js, "S", "b"));
    let stream = WatchedStream {
        namespace: "ns".into(),
        connection: String::new(),
        jetstream: js.clone(),
        system: None,
        stream: "S".into(),
    };
    inventory.watch_stream("ns/s", stream);
    inventory.state().entries.insert(place("S"), Entry::default());
    {
        let state = inventory.state();
        let watchers = &state.places[&place("S")];
        assert_eq!(watchers.consumers.keys().collect::<Vec<_>>(), ["ns/a", "ns/b"]);
        assert_eq!(watchers.streams.iter().collect::<Vec<_>>(), ["ns/s"]);
    }

    // Watching the same place again keeps what the rounds know of it.
    inventory.watch("ns/a", consumer(&js, "S", "a"));
    assert!(inventory.state().entries.contains_key(&place("S")));

    // A consumer that moves to another stream leaves the first place to the others.
    inventory.watch("ns/a", consumer(&js, "T", "a"));
    {
        let state = inventory.state();
        assert_eq!(state.places[&place("S")].consumers.keys().collect::<Vec<_>>(), ["ns/b"]);
        assert_eq!(state.places[&place("T")].consumers.keys().collect::<Vec<_>>(), ["ns/a"]);
    }

    // The last watcher gone, the place and its entry go.
    inventory.forget("ns/b");
    assert!(inventory.state().places.contains_key(&place("S")), "the Stream object still watches it");
    inventory.forget_stream("ns/s");
    let state = inventory.state();
    assert!(!state.places.contains_key(&place("S")));
    assert!(!state.entries.contains_key(&place("S")));
    assert!(state.places.contains_key(&place("T")));
}
