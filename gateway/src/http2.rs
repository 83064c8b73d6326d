//! HTTP/2 on both sides, with the h2 crate over io_uring sockets.
//!
//! Downstream, a TLS client that chose `h2` by ALPN, or a plain client
//! that opens with the HTTP/2 preface (h2c with prior knowledge), is
//! served by [`server`]; each stream is routed like an HTTP/1.1 request
//! and proxied to the cluster's protocol. Upstream, clusters with
//! `protocol = "h2"` are reached through [`client`]'s multiplexed
//! connections, from clients of either protocol.

pub mod client;
pub mod io;
pub mod server;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
