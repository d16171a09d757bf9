//! The kit behind Jetway's reference order pipeline.
//!
//! `intake` takes orders over HTTP and publishes `orders.created.v1`; `payment`
//! charges each order exactly once; `inventory` reserves its stock; `audit` keeps an
//! immutable, replayable record of every event. Each worker is a [`consume::Handler`]
//! (business logic: an event in, an [`consume::Outcome`] out, testable without NATS)
//! run by the one shared [`consume::run`] loop, in a process wired by [`process`].
//! [`gateway`] is the payment service provider that payment charges, simulated in
//! Stripe's shape as a process of its own.
#![forbid(unsafe_code)]

pub mod audit;
pub mod batch;
pub mod cli;
pub mod consume;
pub mod events;
pub mod gateway;
pub mod http;
pub mod intake;
pub mod inventory;
pub mod metrics;
pub mod payment;
pub mod process;
pub mod publish;
pub mod topology;
pub mod trace;

#[cfg(test)]
mod fixtures;
