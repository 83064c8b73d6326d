//! ringload's integration tests: the built binaries on real sockets on
//! 127.0.0.1, against `ringload serve`, Python's http.server and raw
//! listeners. Every wait has a deadline.

// Test code fails loudly by design: a broken fixture should panic.
#![allow(clippy::unwrap_used)]

mod counts;
mod failures;
mod output;
mod protocols;
mod stall;
mod support;
