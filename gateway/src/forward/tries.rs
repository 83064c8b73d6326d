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

use super::client::{Client, Next};
use crate::failure::Failure;
use crate::limit::RetryBudget;
use crate::metrics::WorkerMetrics;
use crate::metrics::{Counted, bump};
use crate::tls::ClientTls;
use crate::upstream::cluster::{Active, ClusterState, Tally};
use crate::upstream::target::Try;

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

/// An exchange whose chosen answer can be relayed to its client.
pub(crate) trait Relay: Exchange {
    /// The client the answer goes to.
    type Client: Client;

    fn client(&mut self) -> &mut Self::Client;

    /// Relays the chosen answer.
    async fn finish(&mut self, chosen: Chosen<Self::Answer>) -> Next;
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
    /// The worker's requests and retries in flight.
    pub budget: &'a RetryBudget,
    /// The worker's counters (retries, ejections).
    pub metrics: &'a WorkerMetrics,
    pub route: &'a Route,
    pub cluster: &'a Cluster,
    pub state: &'a ClusterState,
    /// This worker's TLS client settings for the cluster, if TLS.
    pub tls: Option<&'a ClientTls>,
    /// The client and the address it reached, when the cluster's
    /// connections start with a PROXY protocol header.
    pub origin: Option<(SocketAddr, SocketAddr)>,
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
        budget,
        metrics,
        route,
        cluster,
        state,
        tls,
        origin,
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
    let budget_allows = || {
        let share = (policy.budget * f64::from(budget.active_requests.get())) as u32;
        budget.active_retries.get() < share.max(policy.min_retries)
    };
    while tries < attempts {
        if tries > 0 {
            if retrying.is_none() && !budget_allows() {
                break;
            }
            if retry_tally.is_none() {
                if state.overflow(true).is_some() {
                    break;
                }
                retry_tally = Some(Tally::new(&state.breakers.retries));
            }
            retrying.get_or_insert_with(|| Counted::new(&budget.active_retries));
            bump(&metrics.retries);
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
            endpoint,
            cluster,
            state,
            rules: &route.policy.response_headers,
            tls,
            replayable: request.replayable,
            timeout: try_timeout,
            origin,
        };
        match exchange.attempt(to).await {
            Ok((answer, status)) => {
                if state.record(endpoint, status < 500) {
                    bump(&metrics.ejections);
                }
                let again = policy.on_statuses.contains(&status)
                    && tries < attempts
                    && may_resend
                    && (retrying.is_some() || budget_allows())
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
                    bump(&metrics.ejections);
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::rc::Rc;

    use ringway_config::{Snapshot, compile_str};

    use super::*;
    use crate::upstream::cluster::Breakers;

    /// What each endpoint answers, by port: a status, or a failure.
    struct Scripted {
        answers: HashMap<u16, Result<u16, Failure>>,
        tried: Vec<u16>,
        discarded: Vec<u16>,
    }

    impl Scripted {
        fn new(answers: &[(u16, Result<u16, Failure>)]) -> Scripted {
            Scripted {
                answers: answers.iter().copied().collect(),
                tried: Vec::new(),
                discarded: Vec::new(),
            }
        }
    }

    impl Exchange for Scripted {
        type Answer = u16;

        async fn attempt(&mut self, to: Try<'_>) -> Result<(u16, u16), Failure> {
            let port = to.addr.port();
            self.tried.push(port);
            self.answers[&port].map(|status| (port, status))
        }

        async fn discard(&mut self, answer: u16, _to: Try<'_>) {
            self.discarded.push(answer);
        }
    }

    /// A snapshot with one route on a round-robin cluster of endpoints on
    /// the scripted ports (127.0.0.1), the route's `retry` as given.
    fn snapshot(retry: &str, ports: &[u16]) -> Snapshot {
        let endpoints: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
        let toml = format!(
            "[[listener]]\nname = \"edge\"\nlisten = \"127.0.0.1:0\"\n\
             [[route]]\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"app\"\n{retry}\n\
             [cluster.app]\nendpoints = [{}]\nbalancer = \"round-robin\"\n",
            endpoints.join(", ")
        );
        compile_str("tries.toml", &toml).unwrap()
    }

    struct Run {
        result: Result<u16, Failure>,
        tried: Vec<u16>,
        discarded: Vec<u16>,
        retries: u64,
    }

    /// Runs the tries of one request against `answers`, with `active`
    /// requests and `retrying` retries already in flight on the worker.
    fn run_tries(
        retry: &str,
        answers: &[(u16, Result<u16, Failure>)],
        request: Request,
        (active, retrying): (u32, u32),
    ) -> Run {
        let ports: Vec<u16> = answers.iter().map(|(port, _)| *port).collect();
        let snapshot = snapshot(retry, &ports);
        let cluster = &snapshot.clusters[0];
        let state = ClusterState::new(
            cluster,
            &mut HashMap::new(),
            Vec::new(),
            (1, 1),
            Rc::new(Breakers::default()),
            true,
        );
        let budget = RetryBudget::default();
        budget.active_requests.set(active);
        budget.active_retries.set(retrying);
        let metrics = WorkerMetrics::default();
        let to = Destination {
            budget: &budget,
            metrics: &metrics,
            route: &snapshot.routes[0],
            cluster,
            state: &state,
            tls: None,
            origin: None,
        };
        let mut exchange = Scripted::new(answers);
        let mut upstream = None;
        let result = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(run(&mut exchange, to, request, &mut upstream));
        Run {
            result: result.map(|chosen| chosen.answer),
            tried: exchange.tried,
            discarded: exchange.discarded,
            retries: metrics.retries.get(),
        }
    }

    const GET: Request = Request {
        replayable: true,
        idempotent: true,
        key_hash: None,
    };
    const REFUSED: Failure = Failure::Connect(std::io::ErrorKind::ConnectionRefused);

    #[test]
    fn a_refused_connection_is_tried_once_more_elsewhere_by_default() {
        let all_refuse = [(1, Err(REFUSED)), (2, Err(REFUSED)), (3, Err(REFUSED))];
        let run = run_tries("", &all_refuse, GET, (1, 0));
        assert_eq!(run.result, Err(REFUSED));
        // The default policy: two tries in all, on two endpoints.
        assert_eq!(run.tried.len(), 2);
        assert_ne!(run.tried[0], run.tried[1]);
        assert_eq!(run.retries, 1);
    }

    #[test]
    fn a_retryable_status_is_replaced_and_the_replaced_answer_discarded() {
        let retry = "retry = { attempts = 3, on = [\"503\"] }";
        let answers = [(1, Ok(503)), (2, Ok(503)), (3, Ok(503))];
        let run = run_tries(retry, &answers, GET, (1, 0));
        // Every endpoint says 503: the last answer is the one relayed, the
        // two before it were discarded (their connections given back).
        assert_eq!(run.result, Ok(*run.tried.last().unwrap()));
        assert_eq!(run.tried.len(), 3);
        assert_eq!(run.discarded, run.tried[..2]);
        assert_eq!(run.retries, 2);
    }

    #[test]
    fn a_status_is_not_retried_for_a_request_that_cannot_be_sent_again() {
        let retry = "retry = { attempts = 3, on = [\"503\"] }";
        let answers = [(1, Ok(503)), (2, Ok(503)), (3, Ok(503))];
        let post = Request {
            idempotent: false,
            ..GET
        };
        let streamed = Request {
            replayable: false,
            ..GET
        };
        for request in [post, streamed] {
            let run = run_tries(retry, &answers, request, (1, 0));
            assert_eq!(run.tried.len(), 1);
            assert!(run.discarded.is_empty());
            assert_eq!(run.retries, 0);
        }
    }

    #[test]
    fn the_retry_budget_stops_retries_beyond_its_share() {
        let retry =
            "retry = { attempts = 3, on = [\"connect-failure\"], budget = 0.2, min_retries = 1 }";
        let answers = [(1, Err(REFUSED)), (2, Err(REFUSED)), (3, Ok(200))];
        // 10 requests in flight, 2 of them retries: 20% is spent.
        let run = run_tries(retry, &answers, GET, (10, 2));
        assert_eq!(run.tried.len(), 1);
        assert_eq!(run.retries, 0);
        // With room in the budget, the request reaches a working endpoint.
        let run = run_tries(retry, &answers, GET, (10, 0));
        assert_eq!(run.result, Ok(3));
        assert_eq!(run.retries as usize, run.tried.len() - 1);
    }

    #[test]
    fn a_stream_refused_unprocessed_may_go_again_to_the_same_endpoint() {
        let retry = "retry = { attempts = 2, on = [\"reset\"] }";
        let post = Request {
            idempotent: false,
            ..GET
        };
        // Not processed: safe whatever the method, and with no other
        // endpoint left, the same one is asked again.
        let run = run_tries(retry, &[(1, Err(Failure::Refused))], post, (1, 0));
        assert_eq!(run.tried, [1, 1]);
        assert_eq!(run.result, Err(Failure::Refused));
        // A reset after processing may not: a POST is not sent twice.
        let closed = Failure::Closed { started: false };
        let run = run_tries(retry, &[(1, Err(closed)), (2, Ok(200))], post, (1, 0));
        assert_eq!(run.tried.len(), 1);
        assert_eq!(run.result, Err(closed));
    }
}
