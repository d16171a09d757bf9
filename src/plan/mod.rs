//! Pure planning: what Jetway would do to make the server match a spec. No clients,
//! no awaits, no clock; the controllers feed in what they observed and execute the plan.

pub mod consumer;
pub mod scale;
pub mod stream;

use std::fmt;

/// One field the plan changes on the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldChange {
    /// Where the field is in the spec, such as `spec.maxAge`.
    pub field: &'static str,
    /// The server's value, as JSON.
    pub from: String,
    /// The value it will have, as JSON.
    pub to: String,
}

/// A reason the plan refuses to touch the server, naming the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.field, self.from, self.to)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl Violation {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}
