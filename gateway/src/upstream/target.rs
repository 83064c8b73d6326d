//! Where one try of a request goes and under what terms: the endpoint,
//! its cluster's settings and this worker's state for it.

use std::net::SocketAddr;
use std::time::Duration;

use ringway_balancer::EndpointId;
use ringway_config::{Cluster, HeaderRules};

use super::cluster::ClusterState;
use crate::tls::ClientTls;

/// Where one try goes and under what terms.
#[derive(Clone, Copy)]
pub(crate) struct Try<'a> {
    pub addr: SocketAddr,
    /// The endpoint's index in the cluster.
    pub endpoint: EndpointId,
    pub cluster: &'a Cluster,
    pub state: &'a ClusterState,
    /// Response header rules of the route.
    pub rules: &'a HeaderRules,
    /// This worker's TLS client settings for the cluster, when it is
    /// reached over TLS.
    pub tls: Option<&'a ClientTls>,
    /// The whole request is at hand to send again.
    pub replayable: bool,
    pub timeout: Duration,
    /// The client's address and the one it reached, when the cluster's
    /// connections start with a PROXY protocol header naming them.
    pub origin: Option<(SocketAddr, SocketAddr)>,
}

/// What a pooled connection must have been opened with for a try to
/// reuse it: the same TLS settings (their fingerprint, 0 for plain TCP)
/// and, when a PROXY protocol header starts it, the very client and
/// address that header names (compared exactly: a hash of them could be
/// made to collide by a client choosing its address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ReuseKey {
    pub tls: u64,
    pub origin: Option<(SocketAddr, SocketAddr)>,
}

impl Try<'_> {
    /// Which pooled connections this try may use.
    pub(crate) fn reuse_key(&self) -> ReuseKey {
        ReuseKey {
            tls: self.tls.map_or(0, |t| t.fingerprint),
            origin: self.origin,
        }
    }
}
