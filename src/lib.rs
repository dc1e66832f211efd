//! An edge LLM router for Cloudflare Workers.
//!
//! Clients send OpenAI-format requests to one endpoint; the router checks them, picks a provider,
//! adapts the body for it, forwards it with the router's own key, fails over to the next key or
//! provider while nothing has reached the client yet, and hands the answer back. A request's
//! journey, in the order the modules are read:
//!
//! 1. [`core::endpoint`]: which endpoint the method and path name (404 / 405 / preflight);
//! 2. [`core::config`]: the validated configuration and secrets, parsed once per isolate;
//! 3. [`core::cors`]: whether a browser origin may call;
//! 4. [`core::auth`]: whether the caller holds a gateway key;
//! 5. [`core::request`]: the body, parsed into a typed request (unknown fields kept), its prompt
//!    tokens estimated by [`core::tokens`];
//! 6. [`core::classify`]: fast path or slow path, the ordered candidates, the reasons;
//! 7. [`core::route`]: the targets that can serve the request, and the choice of one target and
//!    key;
//!    ([`core::job`] runs steps 5 to 7 for a request with a body, and hands the loop a payload
//!    that adapts itself to each choice);
//! 8. [`core::adapt`]: the body as that provider wants it;
//! 9. [`core::upstream`]: the outbound request, built from scratch (client credentials stay here);
//! 10. [`core::outcome`]: the upstream's answer, classified once; [`core::ratelimit`] reads
//!     what the provider says of its limits;
//! 11. [`core::failover`]: the attempt loop around steps 7 to 10: which candidate and key to try
//!     next (for providers that track limits, [`core::quota`] books the request in the quota
//!     ledger, a Durable Object per provider, and settles it after the answer), and what each
//!     outcome means: another organization, key, model or provider, or the answer;
//! 12. [`core::stream`]: the answer, handed on once its first chunk shows it is one (an event
//!     stream that opens with an error event still fails over), and read at its end for the
//!     usage;
//! 13. [`core::report`]: the response headers that explain the journey, and its log line;
//!
//! and [`core::error`]: every failure, rendered in the OpenAI error format.
//!
//! `core` is plain Rust, tested natively. `edge` (wasm32 only) is the Worker glue: it moves bytes
//! between the runtime and the core and does the I/O.

pub mod core;

#[cfg(target_arch = "wasm32")]
mod edge;
