//! Forwarding, written once per upstream protocol.
//!
//! A downstream session (HTTP/1.1 or HTTP/2) parses a request and hands
//! it here through one interface, [`client::Client`]:
//!
//! - [`plan`] routes it and makes the gateway's own answers;
//! - [`proxy`] applies the cluster's breakers and runs the [`tries`]
//!   (retry policy, budget, ejections), each try an exchange with an
//!   HTTP/1.1 upstream ([`h1`]) or an HTTP/2 upstream ([`h2`]);
//! - [`tunnel`] joins a WebSocket's two sides;
//! - [`record`] counts and logs the request once it is over.
//!
//! Nothing here knows how the client's bytes are framed: that is the
//! session's side of [`client::Client`].

pub(crate) mod client;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod plan;
pub(crate) mod proxy;
pub(crate) mod record;
pub(crate) mod tries;
pub(crate) mod tunnel;
