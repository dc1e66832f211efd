//! The pure core: every decision the router makes, with no `worker` types, no clock and no
//! I/O, so that `cargo test` checks it natively.
//!
//! The modules are listed in the order a request meets them (`rustfmt.toml` keeps the order).
//! `failover` plans the attempt loop, which runs `route` to `outcome` once per attempt (booking
//! with `quota` first where a provider tracks limits); `stream` hands the answer on.
//! `latency` learns how fast each target answers (the fast path's timeouts and hedges).
//! `ratelimit` and `quota` serve those steps; `models`, `operator` and `error` stand beside the
//! journey.

pub mod endpoint;
pub mod config;
pub mod cors;
pub mod auth;
pub mod token;
pub mod caller;
pub mod usage;
pub mod request;
pub mod responses;
pub mod tokens;
pub mod classify;
pub mod route;
pub mod job;
pub mod adapt;
pub mod upstream;
pub mod outcome;
pub mod failover;
pub mod latency;
pub mod stream;
pub mod ratelimit;
pub mod quota;
pub mod batch;
pub mod report;
pub mod models;
pub mod operator;
pub mod error;
