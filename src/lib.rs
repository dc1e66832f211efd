//! An edge LLM router for Cloudflare Workers.
//!
//! Clients send OpenAI-format requests to one endpoint; the router checks them, forwards them to
//! an OpenAI-compatible upstream with the router's own key, and hands the answer back. A request's
//! journey, in the order the modules are read:
//!
//! 1. [`core::endpoint`]: which endpoint the method and path name (404 / 405 otherwise);
//! 2. [`core::config`]: the upstream and its key, from the Worker's vars and secrets;
//! 3. [`core::request`]: the body is checked to be a JSON object, then forwarded unchanged;
//! 4. [`core::upstream`]: the outbound request, built from scratch (client credentials stay here);
//! 5. [`core::outcome`]: the upstream's answer, classified once;
//! 6. [`core::error`]: every failure, rendered in the OpenAI error format.
//!
//! `core` is plain Rust, tested natively. `edge` (wasm32 only) is the Worker glue: it moves bytes
//! between the runtime and the core and does the I/O.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod edge;
