//! The client side: accepted connections, TLS, and the two sessions that
//! read requests and write responses, [`h1`] for HTTP/1.1 and [`h2`] for
//! HTTP/2. Both present the same request interface to the forwarding
//! code (`forward::client::Client`), so forwarding is written once per
//! upstream protocol rather than once per pair.

pub(crate) mod accept;
pub(crate) mod h1;
pub(crate) mod h2;
pub(crate) mod proxy_protocol;
