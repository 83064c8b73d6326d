//! The tries of one proxied request: which endpoint, how long, and whether
//! another endpoint may be tried after a failure or a retryable status.
//!
//! Protocol-neutral: how a try reaches its endpoint (HTTP/1.1 or HTTP/2,
//! for a client of either) is the [`Exchange`]'s business, so retries,
//! budgets, breakers and ejections behave the same on every path.

use std::net::SocketAddr;
use std::time::Duration;

use ringway_balancer::EndpointId;
use ringway_config::{Cluster, Route};

use crate::failure::Failure;
use crate::metrics::{Counted, bump};
use crate::tls::ClientTls;
use crate::upstream::cluster::{Active, ClusterState, Tally};
use crate::upstream::target::Try;
use crate::worker::state::Worker;

/// Most tries of one request, whatever a route asks.
const MAX_ATTEMPTS: usize = 10;

/// Sends a request to one endpoint and reads the response head.
pub(crate) trait Exchange {
    /// A response head received and not yet relayed.
    type Answer;

    /// One try; the answer's status on success.
    async fn attempt(&mut self, to: Try<'_>) -> Result<(Self::Answer, u16), Failure>;

    /// Drops an answer that a retry replaces.
    async fn discard(&mut self, answer: Self::Answer, to: Try<'_>);
}

/// The answer chosen, with what relaying it needs.
pub(crate) struct Chosen<A> {
    pub answer: A,
    pub addr: SocketAddr,
    /// The time left for the response body.
    pub timeout: Duration,
    /// Counts the request as active on its endpoint until relayed.
    pub _active: Active,
}

/// The facts of the request that decide what may be retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request {
    /// The whole request is at hand to send again.
    pub replayable: bool,
    /// Safe to send twice (RFC 9110 §9.2.2).
    pub idempotent: bool,
    pub key_hash: Option<u64>,
}

/// Where a request's tries go: the route, its cluster (a split's arm
/// chosen) and this worker's state for it.
#[derive(Clone, Copy)]
pub(crate) struct Destination<'a> {
    pub worker: &'a Worker,
    pub route: &'a Route,
    pub cluster: &'a Cluster,
    pub state: &'a ClusterState,
    /// This worker's TLS client settings for the cluster, if TLS.
    pub tls: Option<&'a ClientTls>,
}

/// Tries endpoints of `cluster` for `route` until one answers with a
/// response worth relaying, the retry policy or budget says stop, or time
/// runs out. The caller holds the request's breaker tally and its
/// `active_requests` count while it relays. `upstream` is set to each
/// endpoint tried.
pub(crate) async fn run<E: Exchange>(
    exchange: &mut E,
    to: Destination<'_>,
    request: Request,
    upstream: &mut Option<SocketAddr>,
) -> Result<Chosen<E::Answer>, Failure> {
    let Destination {
        worker,
        route,
        cluster,
        state,
        tls,
    } = to;
    let policy = &route.retry;
    let mut retry_tally: Option<Tally> = None;
    let mut retrying: Option<Counted<'_>> = None;
    let started = crate::clock::now();
    let mut tried = [EndpointId(0); MAX_ATTEMPTS];
    let mut tries = 0;
    let mut last = Failure::NoEndpoint;
    let attempts = (policy.attempts as usize).clamp(1, MAX_ATTEMPTS);
    let may_resend = request.replayable && request.idempotent;
    // A retry must leave room for the request's other retries too: at
    // most `budget` of the worker's active requests may be retries.
    let budget_allows = |worker: &Worker| {
        let share = (policy.budget * f64::from(worker.budget.active_requests.get())) as u32;
        worker.budget.active_retries.get() < share.max(policy.min_retries)
    };
    while tries < attempts {
        if tries > 0 {
            if retrying.is_none() && !budget_allows(worker) {
                break;
            }
            if retry_tally.is_none() {
                if state.overflow(true).is_some() {
                    break;
                }
                retry_tally = Some(Tally::new(&state.breakers.retries));
            }
            retrying.get_or_insert_with(|| Counted::new(&worker.budget.active_retries));
            bump(&worker.metrics.retries);
        }
        // A stream refused unprocessed may go to the same endpoint again
        // when no other is left.
        let unprocessed = matches!(last, Failure::Refused | Failure::GoneAway);
        let picked = state
            .pick(request.key_hash, &tried[..tries])
            .or_else(|| unprocessed.then(|| state.pick(request.key_hash, &[]))?);
        let Some(endpoint) = picked else {
            break;
        };
        tried[tries] = endpoint;
        tries += 1;
        let addr = cluster.endpoints[endpoint.0 as usize].addr;
        *upstream = Some(addr);
        let left = route.timeout.saturating_sub(crate::clock::since(started));
        if left.is_zero() {
            last = Failure::Timeout;
            break;
        }
        let try_timeout = policy.per_try_timeout.map_or(left, |t| t.min(left));
        let active = Active::new(state.stats(endpoint));
        let to = Try {
            addr,
            endpoint: endpoint.0 as usize,
            cluster,
            state,
            rules: &route.policy.response_headers,
            tls,
            replayable: request.replayable,
            timeout: try_timeout,
        };
        match exchange.attempt(to).await {
            Ok((answer, status)) => {
                if state.record(endpoint, status < 500) {
                    bump(&worker.metrics.ejections);
                }
                let again = policy.on_statuses.contains(&status)
                    && tries < attempts
                    && may_resend
                    && (retrying.is_some() || budget_allows(worker))
                    && state.has_candidate(&tried[..tries]);
                if !again {
                    return Ok(Chosen {
                        answer,
                        addr,
                        timeout: try_timeout,
                        _active: active,
                    });
                }
                // This answer is dropped for another endpoint's.
                exchange.discard(answer, to).await;
            }
            Err(failure) => {
                if failure.is_upstream_fault() && state.record(endpoint, false) {
                    bump(&worker.metrics.ejections);
                }
                let again = match failure {
                    // Nothing was sent: safe for any request.
                    Failure::Connect(_) | Failure::ConnectTimeout => policy.on_connect_failure,
                    Failure::Closed { started: false } => policy.on_reset && may_resend,
                    // Not processed: safe whatever the method.
                    Failure::Refused | Failure::GoneAway => policy.on_reset && request.replayable,
                    Failure::Timeout => policy.on_statuses.contains(&504) && may_resend,
                    _ => false,
                };
                last = failure;
                if !again {
                    break;
                }
            }
        }
    }
    Err(last)
}
