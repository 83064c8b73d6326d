//! One proxied request, whatever the client speaks: the cluster's
//! breakers, the tries (retries, budgets, ejections), then the chosen
//! answer relayed or the failure answered.

use std::time::Duration;

use ringway_codec::http1::framing::Framing;
use ringway_config::{ClusterId, UpstreamProtocol};
use ringway_router::RouteId;

use super::client::{Client, Next};
use super::h1::H1Exchange;
use super::h2::H2Exchange;
use super::plan::Plan;
use super::tries::{self, Destination, Relay};
use crate::failure::Failure;
use crate::metrics::Counted;
use crate::upstream::cluster::Tally;
use crate::worker::state::{Generation, Worker};

/// Where a routed request goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proxied {
    pub(crate) plan: Plan,
    pub(crate) route: RouteId,
    /// The cluster (a split's arm already chosen); `None` answers 503.
    pub(crate) cluster: Option<ClusterId>,
    /// The request's hash key, for the hashing balancers.
    pub(crate) key_hash: Option<u64>,
    /// Injected delay before proxying.
    pub(crate) delay: Option<Duration>,
}

/// Proxies `client`'s request, trying again on another endpoint where the
/// route's retry policy and the worker's retry budget allow it.
pub(crate) async fn proxy<C: Client>(
    client: &mut C,
    worker: &Worker,
    generation: &Generation,
    request: Proxied,
) -> Next {
    let Proxied {
        plan,
        route,
        cluster,
        key_hash,
        delay,
    } = request;
    if let Some(delay) = delay {
        monoio::time::sleep(delay).await;
    }
    // With the whole request at hand (in the upstream head), it can be
    // sent again.
    let replayable = !client.body_pending();
    let Some(cluster_id) = cluster else {
        return client.fail(Failure::NoEndpoint, replayable).await;
    };
    client.log().cluster = Some(cluster_id);
    let too_large = match (plan.max_body, plan.framing) {
        (Some(max), Framing::Length(n)) => n > max,
        (Some(max), _) => client.log().body_in > max,
        (None, _) => false,
    };
    if too_large {
        return client.fail(Failure::BodyTooLarge, false).await;
    }
    let snapshot = &generation.snapshot;
    let cluster = &snapshot.clusters[cluster_id.0 as usize];
    let route = &snapshot.routes[route.0 as usize];
    let state = generation.cluster(cluster_id);
    if let Some(overflow) = state.overflow(false) {
        return client.fail(Failure::Overflow(overflow), replayable).await;
    }
    let _request = Tally::new(&state.breakers.requests);
    let _active = Counted::new(&worker.budget.active_requests);
    let retry = tries::Request {
        replayable,
        idempotent: plan.idempotent,
        key_hash,
    };
    let destination = Destination {
        budget: &worker.budget,
        metrics: &worker.metrics,
        route,
        cluster,
        state,
        tls: generation.upstream_tls(cluster_id),
        origin: cluster.proxy_protocol.map(|_| plan.origin()),
    };
    let rules = &route.policy.response_headers;
    match cluster.protocol {
        UpstreamProtocol::Http1 => {
            let pool = &worker.upstreams.h1;
            let exchange = H1Exchange {
                client,
                pool,
                cluster,
                plan,
            };
            try_and_relay(exchange, destination, retry).await
        }
        UpstreamProtocol::Http2 => {
            let pool = &worker.upstreams.h2;
            let exchange = H2Exchange {
                client,
                pool,
                plan,
                rules,
            };
            try_and_relay(exchange, destination, retry).await
        }
    }
}

/// Runs the tries, then relays the chosen answer or answers the failure.
async fn try_and_relay<E: Relay>(
    mut exchange: E,
    destination: Destination<'_>,
    retry: tries::Request,
) -> Next {
    let mut upstream = None;
    let chosen = tries::run(&mut exchange, destination, retry, &mut upstream).await;
    exchange.client().log().upstream = upstream;
    match chosen {
        Ok(chosen) => exchange.finish(chosen).await,
        Err(failure) => {
            let client = exchange.client();
            let body_read = !client.body_pending();
            client.fail(failure, body_read).await
        }
    }
}
