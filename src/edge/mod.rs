//! The thin edge: the Worker glue. It turns runtime objects into plain values for the core,
//! performs the one upstream `fetch`, and turns the core's answers back into runtime objects.
//! It decides nothing itself.
//!
//! - [`entry`]: the `fetch` event handler, the request's journey end to end;
//! - [`attempts`]: the attempt loop: quota calls and upstream calls as the core's planner says,
//!   each with its clock;
//! - [`stream`]: the upstream call and its answer: a short JSON answer read whole, any other
//!   body piped to the client by the runtime, its last bytes read from a copy;
//! - [`http`]: the runtime calls around the request: its headers and body, the client's
//!   response, capped reads, the attempt's clock; with `stream`, the Rust side of `runtime.js`;
//! - [`caller`]: who calls (a gateway key, or a user token verified with WebCrypto), the
//!   caller's own limits and budgets, and its usage gathered for the books;
//! - [`quota`]: the quota ledger's Durable Object, and the Worker's calls to it;
//! - [`usage`]: the usage books' Durable Object;
//! - [`batch`]: the Batch API passed to providers, uploads streamed through the core's
//!   rewriter, and the registry of files and batches (a Durable Object per owner).

mod attempts;
mod batch;
mod caller;
mod entry;
mod http;
mod quota;
mod stream;
mod usage;
