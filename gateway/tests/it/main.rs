//! ringway's integration tests: real sockets on 127.0.0.1, real upstreams,
//! a real gateway, real clients (curl among them).

// Test code fails loudly by design: a broken fixture should panic.
#![allow(clippy::unwrap_used)]

mod support;

mod bodies;
mod bulk;
mod client_addr;
mod discovery;
mod dns;
mod errors;
mod governance;
mod grpc;
mod h2_resets;
mod health;
mod http2;
mod idle;
mod lifecycle;
mod matrix;
mod observability;
mod packaging;
mod paths;
mod pool_hygiene;
mod proxy_protocol;
mod reload;
mod ringload;
mod routing;
mod telemetry;
mod tls;
mod traffic;
mod under_load;
mod upgrade;
mod websocket;
