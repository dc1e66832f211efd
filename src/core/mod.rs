//! The pure core: every decision the router makes, with no `worker` types, no clock and no
//! I/O, so that `cargo test` checks it natively.
//!
//! Read the modules in the order a request meets them.

pub mod adapt;
pub mod auth;
pub mod config;
pub mod cors;
pub mod endpoint;
pub mod error;
pub mod models;
pub mod outcome;
pub mod request;
pub mod route;
pub mod upstream;
