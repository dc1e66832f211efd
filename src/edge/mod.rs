//! The thin edge: the Worker glue. It turns runtime objects into plain values for the core,
//! performs the one upstream `fetch`, and turns the core's answers back into runtime objects.
//! It decides nothing itself.
//!
//! - [`entry`]: the `fetch` event handler, the request's journey end to end;
//! - [`attempts`]: the attempt loop: quota calls and upstream calls as the core's planner says,
//!   each raced against its timeout;
//! - [`stream`] (with `stream.js`): event streams handed to the client in JavaScript;
//! - [`http`]: conversions between `worker` types and the core's values;
//! - [`quota`]: the quota ledger's Durable Object, and the Worker's calls to it.

mod attempts;
mod entry;
mod http;
mod quota;
mod stream;
