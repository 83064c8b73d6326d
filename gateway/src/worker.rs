//! One worker per core: a thread, its io_uring runtime, its listeners and
//! its per-core state. Nothing here is shared with another worker.
//!
//! [`state`] holds the per-core state that survives a reload ([`state::Worker`]:
//! pools, endpoint counters, breakers, session caches, the random
//! generator, telemetry buffers) and the [`state::Generation`] built from
//! a snapshot and that state; [`run`] is the thread's command loop.

pub(crate) mod run;
pub(crate) mod slots;
pub(crate) mod state;
