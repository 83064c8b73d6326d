//! Where one try of a request goes and under what terms: the endpoint,
//! its cluster's settings and this worker's state for it.

use std::hash::{Hash, Hasher};
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

impl Try<'_> {
    /// Which pooled connections this try may use: those opened with the
    /// same TLS settings (0 for plain TCP) and, when a PROXY protocol
    /// header starts them, for the same client.
    pub(crate) fn reuse_key(&self) -> u64 {
        let tls = self.tls.map_or(0, |t| t.fingerprint);
        match self.origin {
            None => tls,
            Some(origin) => {
                let mut hasher = rustc_hash::FxHasher::default();
                (tls, origin).hash(&mut hasher);
                hasher.finish()
            }
        }
    }
}
