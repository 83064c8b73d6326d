//! ringway's HTTP codec: what the gateway knows of HTTP/1.1 and of the
//! way between HTTP/1.1 heads and HTTP/2 messages, as pure functions.
//!
//! - [`http1`]: strict request and response head parsing (anything
//!   ambiguous that could smuggle a request past the gateway is refused),
//!   body framing ([`http1::framing::BodyReader`]: Content-Length,
//!   chunked, close-delimited), and writing the heads the gateway sends.
//! - [`convert`]: an HTTP/1.1 head written for the upstream turned into an
//!   `http::Request` for an HTTP/2 upstream, and HTTP/2 responses into
//!   heads for either kind of client.
//! - [`path`]: request path normalization before routing (dot segments,
//!   percent-encodings, slashes).
//! - [`HeaderRules`]: the header edits a route applies.
//!
//! No I/O, no runtime, no allocation beyond the caller's reused buffers
//! on the HTTP/1.1 path: everything here takes bytes and returns bytes or
//! a verdict, so it can be tested exhaustively and fuzzed. This crate
//! depends on nothing else in the workspace; `ringway-config` re-exports
//! [`HeaderRules`] and the gateway drives the codec over its sockets.

#![forbid(unsafe_code)]

pub mod convert;
pub mod http1;
pub mod path;
mod rules;

pub use rules::HeaderRules;
