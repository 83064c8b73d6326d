//! ringway's configuration: the TOML schema, its validation, and the
//! immutable [`Snapshot`] the workers serve from.
//!
//! A file goes through three steps: [`schema`] deserializes it strictly
//! (unknown keys are errors) keeping the span of every value, [`compile`]
//! validates it as a whole (clusters exist, names are unique, addresses and
//! regexes parse) and builds the router, and the result is published as one
//! `Arc<Snapshot>` through [`Published`]. Every error names
//! `file:line:col` and says what was expected.
//!
//! This crate depends on `ringway-router` and `ringway-balancer` only; it
//! knows nothing of sockets or runtimes. The only I/O it does is reading the
//! file it is asked to load and the PEM files it names (and resolving
//! listener addresses written as host names, and reading the system's root
//! certificates for upstream TLS, which happen on the control thread, never
//! on a worker). Endpoint names are not resolved here: a snapshot says which
//! DNS questions its clusters ask ([`Snapshot::dns_queries`]) and takes the
//! answers the gateway's resolver got ([`Snapshot::resolve`]).
#![forbid(unsafe_code)]

mod compile;
mod discovery;
mod duration;
mod error;
mod publish;
pub mod schema;
mod snapshot;
mod tables;
mod tls;

pub use compile::{DEFAULT_CONFIG, compile_file_text, compile_str, load_file};
pub use discovery::{
    AddressFamily, DeclaredEndpoint, DnsAnswer, DnsQuery, DnsSettings, Endpoint, EndpointSource,
    ServiceEndpoint, SrvRecord, srv_choice,
};
pub use duration::parse_duration;
pub use error::{Error, Result};
pub use publish::Published;
pub use ringway_balancer::BalancerKind;
pub use ringway_router::{IpRange, canonical_ip};
pub use snapshot::{
    AccessLog, Action, Cluster, ClusterId, DirectResponse, HashKey, HeaderRules, HealthCheck,
    HealthKind, Http2Settings, IoDriver, Limits, Listener, LogFormat, OtlpEndpoint, Outlier,
    ProxyProtocol, RateLimit, Redirect, RetryPolicy, Route, RoutePolicy, Runtime, Snapshot,
    Tracing, Underscores, UpstreamProtocol, WeightedCluster, Workers,
};
pub use tables::TableBuild;
pub use tls::{
    ClientAuth, Tls, TlsCertificate, TlsVersion, UpstreamTls, client_identity, crypto_provider,
};
