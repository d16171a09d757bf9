//! What the server made of the configurations Jetway sent it.
//!
//! The server fills in and rewrites parts of a configuration (a consumer's ack wait
//! becomes its first backoff step, a sealed stream denies deletes, ...). The planners
//! know the rewrites the server documents; this memory catches the rest: once the
//! server has answered a configuration with its own form of it, that form is what
//! the spec stands for until the spec changes. A server that keeps its answer is in
//! sync, and drift from that answer is still repaired, so Jetway never sends the same
//! change twice to a server that has already made up its mind.

use std::collections::HashMap;
use std::sync::Mutex;

/// Per object key: the configuration sent (a hash of it is enough to know it again)
/// and the server's answer to it.
pub struct Answers<C>(Mutex<HashMap<String, (u64, C)>>);

impl<C> Default for Answers<C> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<C: Clone + serde::Serialize> Answers<C> {
    /// The server stored `sent` as `answer` for the object `key`.
    pub fn remember(&self, key: &str, sent: &C, answer: &C) {
        let sent = crate::jetstream::hash(sent);
        self.0.lock().expect("answers lock").insert(key.to_owned(), (sent, answer.clone()));
    }

    /// The server's form of `desired`, when it answered exactly this configuration before.
    pub fn stored_form(&self, key: &str, desired: &C) -> Option<C> {
        let desired = crate::jetstream::hash(desired);
        let answers = self.0.lock().expect("answers lock");
        answers.get(key).filter(|(sent, _)| *sent == desired).map(|(_, answer)| answer.clone())
    }

    pub fn forget(&self, key: &str) {
        self.0.lock().expect("answers lock").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_stands_for_the_configuration_it_answered_only() {
        let answers = Answers::default();
        answers.remember("ns/a", &1, &2);
        assert_eq!(answers.stored_form("ns/a", &1), Some(2));
        assert_eq!(answers.stored_form("ns/a", &3), None, "a changed spec is planned as it is");
        assert_eq!(answers.stored_form("ns/b", &1), None);
        answers.forget("ns/a");
        assert_eq!(answers.stored_form("ns/a", &1), None);
    }
}
