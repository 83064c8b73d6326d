//! DNS discovery: one thread for the whole process asks every question the
//! clusters' endpoints need (`host:port` names, SRV names), again when the
//! answer's TTL runs out (clamped to `[runtime] dns`), and tells the
//! control thread when an answer changes; the control thread then gives
//! the workers a snapshot with the new endpoints, as it does for a reload.
//! Workers never resolve and never wait on DNS.
//!
//! Failures keep what was known: a timeout, SERVFAIL or a stopped server
//! leaves the last good answer in place (asked again with back-off). A
//! name that stops existing (NXDOMAIN, or no records) empties its set
//! only once that has lasted `max_ttl`, so one bad answer from a server
//! being redeployed does not take a cluster down.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use ringway_config::{
    AddressFamily, Cluster, DnsAnswer, DnsQuery, DnsSettings, ServiceEndpoint, Snapshot, SrvRecord,
    srv_choice,
};
use tokio::sync::mpsc as tmpsc;

/// Longest wait before asking again after a failure.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// How long changed answers gather before the control thread is told:
/// names that share a TTL are asked together and answer within moments
/// of each other, and they should make one new configuration, not one
/// each.
const GATHER: Duration = Duration::from_millis(50);

/// What is known about one question.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    /// The last good answer (`None` before the first, or once the name has
    /// been gone for `max_ttl`).
    pub answer: Option<DnsAnswer>,
    /// When the last answer (good or bad) came.
    pub asked_at: Option<SystemTime>,
    /// The last failure, cleared by the next good answer.
    pub error: Option<String>,
    /// Answers that changed what `answer` holds.
    pub updates: u64,
    /// Questions that failed.
    pub failures: u64,
    /// Since when the name has not existed, while a good answer is kept.
    gone_since: Option<Instant>,
    /// Whether any outcome came yet.
    settled: bool,
}

/// What every question's state is, for the control thread and the admin
/// listener.
pub(crate) type Status = Arc<Mutex<BTreeMap<DnsQuery, Entry>>>;

/// The resolver thread's handle; dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct Resolver {
    settings: DnsSettings,
    commands: tmpsc::UnboundedSender<Command>,
    status: Status,
}

#[derive(Debug)]
enum Command {
    /// Follow exactly these questions; tell `settled` once each has had an
    /// outcome (or at once when all have).
    Follow {
        queries: BTreeSet<DnsQuery>,
        settled: Option<mpsc::Sender<()>>,
    },
}

impl Resolver {
    /// Starts the thread; `changed` is called (on that thread) when
    /// answers changed. Answers go into `status`, which may hold a previous
    /// resolver's: they stay until answered again.
    pub(crate) fn start(
        settings: &DnsSettings,
        status: Status,
        changed: impl Fn() + Send + 'static,
    ) -> std::io::Result<Resolver> {
        let resolver = build(settings)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (commands, receiver) = tmpsc::unbounded_channel();
        let shared = status.clone();
        let settings = settings.clone();
        let thread_settings = settings.clone();
        std::thread::Builder::new()
            .name("ringway-dns".to_owned())
            .spawn(move || {
                runtime.block_on(run(resolver, thread_settings, receiver, shared, changed));
            })?;
        Ok(Resolver {
            settings,
            commands,
            status,
        })
    }

    /// The settings it was started with.
    pub(crate) fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// Follows exactly `queries` from now on, and waits up to `wait` for
    /// those not yet answered to have their first outcome.
    pub(crate) fn follow(&self, queries: BTreeSet<DnsQuery>, wait: Duration) {
        let (settled, done) = mpsc::channel();
        let command = Command::Follow {
            queries,
            settled: Some(settled),
        };
        if self.commands.send(command).is_ok() {
            let _ = done.recv_timeout(wait);
        }
    }

    /// The last good answer to each question that has one.
    pub(crate) fn answers(&self) -> HashMap<DnsQuery, DnsAnswer> {
        self.status
            .lock()
            .map(|s| {
                s.iter()
                    .filter_map(|(q, e)| e.answer.clone().map(|a| (q.clone(), a)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Resolves the names of `snapshot` once (waiting up to `wait`), gives it
/// the endpoints they make, and returns a warning for each name that did
/// not resolve: what `ringway check` says. Such a name does not refuse
/// the configuration; its cluster serves 503 until it resolves.
pub fn resolve_once(snapshot: &mut Snapshot, wait: Duration) -> Vec<String> {
    let queries = snapshot.dns_queries();
    if queries.is_empty() {
        return Vec::new();
    }
    let status = Status::default();
    let resolver = match Resolver::start(&snapshot.runtime.dns, status.clone(), || {}) {
        Ok(resolver) => resolver,
        Err(e) => return vec![format!("cannot start the DNS resolver: {e}")],
    };
    resolver.follow(queries.clone(), wait);
    let answers = resolver.answers();
    snapshot.resolve(&|q| answers.get(q).cloned());
    let Ok(known) = status.lock() else {
        return Vec::new();
    };
    queries
        .iter()
        .filter(|q| !answers.contains_key(q))
        .map(|q| {
            let why = known
                .get(q)
                .and_then(|e| e.error.clone())
                .unwrap_or_else(|| format!("{q}: no answer within {wait:?}"));
            let clusters: Vec<&str> = snapshot
                .clusters
                .iter()
                .filter(|c| c.source.queries().any(|x| &x == q))
                .map(|c| c.name.as_str())
                .collect();
            format!(
                "{why} (cluster {} starts without these endpoints and gets them when the name resolves)",
                clusters.join(", ")
            )
        })
        .collect()
}

/// `/clusters` lines saying where each cluster's endpoints come from, for
/// clusters that follow DNS: per question, how many endpoints it gave,
/// when it was last asked, and its error if the last asking failed.
pub(crate) fn describe(snapshot: &Snapshot, status: &Status) -> String {
    let Ok(known) = status.lock() else {
        return String::new();
    };
    let mut out = String::new();
    for c in &snapshot.clusters {
        if let Some(file) = &c.endpoints_file {
            let _ = writeln!(
                out,
                "# discovery: cluster {} reads its endpoints from {}",
                c.name,
                file.display()
            );
        }
        for q in c.source.queries() {
            let entry = known.get(&q).cloned().unwrap_or_default();
            let count = match &entry.answer {
                Some(DnsAnswer::Addresses(ips)) => ips.len(),
                Some(DnsAnswer::Services(services)) => services.len(),
                None => 0,
            };
            let asked = entry.asked_at.map_or("not yet answered".to_owned(), |at| {
                let ago = SystemTime::now().duration_since(at).unwrap_or_default();
                format!("asked {:.1}s ago", ago.as_secs_f64())
            });
            let error = entry
                .error
                .map_or(String::new(), |e| format!("; last error: {e}"));
            let _ = writeln!(
                out,
                "# discovery: cluster {} follows DNS {q}: {count} addresses, {asked}, {} updates, {} failures{error}",
                c.name, entry.updates, entry.failures
            );
        }
        if c.endpoints.is_empty() {
            let _ = writeln!(
                out,
                "# cluster {} has no endpoint: {}",
                c.name,
                why(c, &known)
            );
        }
    }
    out
}

/// Why `cluster` has no endpoint: its names' errors, or that they have
/// not been answered yet.
pub(crate) fn why_empty(cluster: &Cluster, status: &Status) -> String {
    status
        .lock()
        .map(|known| why(cluster, &known))
        .unwrap_or_default()
}

fn why(cluster: &Cluster, known: &BTreeMap<DnsQuery, Entry>) -> String {
    let reasons: Vec<String> = cluster
        .source
        .queries()
        .map(|q| match known.get(&q).and_then(|e| e.error.clone()) {
            Some(error) => error,
            None => format!("{q}: no answer yet"),
        })
        .collect();
    if reasons.is_empty() {
        "none is listed".to_owned()
    } else {
        reasons.join("; ")
    }
}

/// Discovery's metrics: per cluster, the endpoints it has now, and for
/// those that follow DNS, answers that changed them and failed questions.
pub(crate) fn render_metrics(snapshot: &Snapshot, status: &Status) -> String {
    let Ok(known) = status.lock() else {
        return String::new();
    };
    let mut updates = String::new();
    let mut failures = String::new();
    let mut endpoints = String::new();
    for c in &snapshot.clusters {
        let name = &c.name;
        let _ = writeln!(
            endpoints,
            "ringway_discovery_endpoints{{cluster=\"{name}\"}} {}",
            c.endpoints.len()
        );
        let mut queries = c.source.queries().peekable();
        if queries.peek().is_none() {
            continue;
        }
        let (u, f) = queries
            .filter_map(|q| known.get(&q))
            .fold((0, 0), |(u, f), e| (u + e.updates, f + e.failures));
        let _ = writeln!(
            updates,
            "ringway_discovery_updates_total{{cluster=\"{name}\"}} {u}"
        );
        let _ = writeln!(
            failures,
            "ringway_discovery_failures_total{{cluster=\"{name}\"}} {f}"
        );
    }
    if endpoints.is_empty() {
        return String::new();
    }
    format!(
        "# HELP ringway_discovery_updates_total DNS answers that changed a cluster's endpoints.\n\
         # TYPE ringway_discovery_updates_total counter\n{updates}\
         # HELP ringway_discovery_failures_total DNS questions of a cluster that failed (the last good answer stays).\n\
         # TYPE ringway_discovery_failures_total counter\n{failures}\
         # HELP ringway_discovery_endpoints Endpoints a cluster has now.\n\
         # TYPE ringway_discovery_endpoints gauge\n{endpoints}"
    )
}

/// A hickory resolver for `settings`: its servers or the system's, its TTL
/// bounds applied to hickory's cache too (so that an answer asked again
/// at its expiry is asked of the server, not the cache).
fn build(settings: &DnsSettings) -> std::io::Result<TokioResolver> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = if settings.resolvers.is_empty() {
        TokioResolver::builder(provider).map_err(std::io::Error::other)?
    } else {
        let servers = settings
            .resolvers
            .iter()
            .map(|addr| {
                let on_port = |mut c: ConnectionConfig| {
                    c.port = addr.port();
                    c
                };
                NameServerConfig::new(
                    addr.ip(),
                    true,
                    vec![
                        on_port(ConnectionConfig::udp()),
                        on_port(ConnectionConfig::tcp()),
                    ],
                )
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let options = builder.options_mut();
    options.ip_strategy = match settings.family {
        AddressFamily::All => LookupIpStrategy::Ipv4AndIpv6,
        AddressFamily::V4 => LookupIpStrategy::Ipv4Only,
        AddressFamily::V6 => LookupIpStrategy::Ipv6Only,
        AddressFamily::V4Preferred => LookupIpStrategy::Ipv4thenIpv6,
        AddressFamily::V6Preferred => LookupIpStrategy::Ipv6thenIpv4,
    };
    options.positive_min_ttl = Some(settings.min_ttl);
    options.positive_max_ttl = Some(settings.max_ttl);
    options.negative_min_ttl = Some(settings.min_ttl);
    options.negative_max_ttl = Some(settings.max_ttl);
    options.timeout = Duration::from_secs(2);
    options.attempts = 1;
    builder.build().map_err(std::io::Error::other)
}

/// One question's outcome.
type Outcome = Result<DnsAnswer, Failure>;

#[derive(Debug)]
struct Failure {
    /// The name does not exist or has no such records.
    gone: bool,
    message: String,
}

/// The thread's loop: follows the questions asked, one task each, and
/// folds their outcomes into the status.
async fn run(
    resolver: TokioResolver,
    settings: DnsSettings,
    mut commands: tmpsc::UnboundedReceiver<Command>,
    status: Status,
    changed: impl Fn(),
) {
    let (outcomes, mut arrivals) = tmpsc::unbounded_channel::<(DnsQuery, Outcome)>();
    let mut tasks: HashMap<DnsQuery, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut waiting: Vec<(BTreeSet<DnsQuery>, mpsc::Sender<()>)> = Vec::new();
    // When to tell the control thread of the changes gathered so far.
    let mut tell_at: Option<tokio::time::Instant> = None;
    loop {
        let told = async {
            match tell_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = told => {
                tell_at = None;
                changed();
            }
            command = commands.recv() => {
                let Some(Command::Follow { queries, settled }) = command else {
                    break;
                };
                tasks.retain(|q, task| {
                    let keep = queries.contains(q);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                let Ok(mut known) = status.lock() else { break };
                known.retain(|q, _| queries.contains(q));
                for q in &queries {
                    known.entry(q.clone()).or_default();
                    if !tasks.contains_key(q) {
                        let task = follow(resolver.clone(), q.clone(), settings.clone(), outcomes.clone());
                        tasks.insert(q.clone(), tokio::spawn(task));
                    }
                }
                if let Some(settled) = settled {
                    let open: BTreeSet<DnsQuery> = queries
                        .into_iter()
                        .filter(|q| !known.get(q).is_some_and(|e| e.settled))
                        .collect();
                    if open.is_empty() {
                        let _ = settled.send(());
                    } else {
                        waiting.push((open, settled));
                    }
                }
            }
            Some((query, outcome)) = arrivals.recv() => {
                if !tasks.contains_key(&query) {
                    continue;
                }
                let Ok(mut known) = status.lock() else { break };
                let entry = known.entry(query.clone()).or_default();
                let moved = apply(entry, outcome, settings.max_ttl);
                drop(known);
                waiting.retain_mut(|(open, settled)| {
                    open.remove(&query);
                    let done = open.is_empty();
                    if done {
                        let _ = settled.send(());
                    }
                    !done
                });
                if moved && tell_at.is_none() {
                    tell_at = Some(tokio::time::Instant::now() + GATHER);
                }
            }
        }
    }
    for task in tasks.values() {
        task.abort();
    }
}

/// Folds `outcome` into `entry`; true when the answer in use changed.
fn apply(entry: &mut Entry, outcome: Outcome, max_ttl: Duration) -> bool {
    entry.settled = true;
    entry.asked_at = Some(SystemTime::now());
    let next = match outcome {
        Ok(answer) => {
            entry.error = None;
            entry.gone_since = None;
            Some(answer)
        }
        Err(failure) => {
            entry.failures += 1;
            entry.error = Some(failure.message);
            if !failure.gone || entry.answer.is_none() {
                return false;
            }
            // Gone: keep the last set until that has lasted `max_ttl`.
            let since = *entry.gone_since.get_or_insert_with(Instant::now);
            if since.elapsed() < max_ttl {
                return false;
            }
            None
        }
    };
    if next == entry.answer {
        return false;
    }
    entry.answer = next;
    entry.updates += 1;
    true
}

/// Asks `query` until aborted: again when the answer's TTL (clamped) runs
/// out, or after a back-off that doubles from `min_ttl` up to 30 s (or
/// `max_ttl`, if shorter) while it fails.
async fn follow(
    resolver: TokioResolver,
    query: DnsQuery,
    settings: DnsSettings,
    outcomes: tmpsc::UnboundedSender<(DnsQuery, Outcome)>,
) {
    let mut retry = settings.min_ttl;
    loop {
        let (outcome, valid_until) = ask(&resolver, &query).await;
        let wait = match (&outcome, valid_until) {
            (Ok(_), Some(until)) => {
                retry = settings.min_ttl;
                until
                    .saturating_duration_since(Instant::now())
                    .clamp(settings.min_ttl, settings.max_ttl)
            }
            _ => {
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY.min(settings.max_ttl).max(settings.min_ttl));
                wait
            }
        };
        if outcomes.send((query.clone(), outcome)).is_err() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// One asking of `query`: its outcome, and until when a good one is valid.
async fn ask(resolver: &TokioResolver, query: &DnsQuery) -> (Outcome, Option<Instant>) {
    match query {
        DnsQuery::Host(name) => match addresses(resolver, name).await {
            Ok((ips, until)) => (Ok(DnsAnswer::Addresses(ips)), Some(until)),
            Err(failure) => (Err(failure), None),
        },
        DnsQuery::Srv(name) => match services(resolver, name).await {
            Ok((services, until)) => (Ok(DnsAnswer::Services(services)), Some(until)),
            Err(failure) => (Err(failure), None),
        },
    }
}

fn failure(name: &str, e: &hickory_resolver::net::NetError) -> Failure {
    Failure {
        gone: e.is_nx_domain() || e.is_no_records_found(),
        message: format!("{name}: {e}"),
    }
}

/// A host's addresses, sorted and each once, and until when they hold.
async fn addresses(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<IpAddr>, Instant), Failure> {
    let lookup = resolver
        .lookup_ip(name)
        .await
        .map_err(|e| failure(name, &e))?;
    let mut ips: Vec<IpAddr> = lookup.iter().collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(Failure {
            gone: true,
            message: format!("{name}: no addresses"),
        });
    }
    Ok((ips, lookup.valid_until()))
}

/// An SRV name's endpoints ([`srv_choice`]), each target resolved, and
/// until when they hold (the soonest of the records' expiries). A target
/// that does not resolve is left out, with the others kept.
async fn services(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<ServiceEndpoint>, Instant), Failure> {
    let lookup = resolver
        .srv_lookup(name)
        .await
        .map_err(|e| failure(name, &e))?;
    let records: Vec<SrvRecord> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(SrvRecord {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.to_ascii().trim_end_matches('.').to_owned(),
            }),
            _ => None,
        })
        .collect();
    let mut until = lookup.valid_until();
    let mut out = Vec::new();
    let mut unresolved = Vec::new();
    for (record, weight) in srv_choice(&records) {
        match addresses(resolver, &record.target).await {
            Ok((ips, valid)) => {
                until = until.min(valid);
                out.extend(ips.into_iter().map(|ip| ServiceEndpoint {
                    target: record.target.clone(),
                    addr: SocketAddr::new(ip, record.port),
                    weight,
                }));
            }
            Err(f) => unresolved.push(f.message),
        }
    }
    if out.is_empty() {
        let message = if unresolved.is_empty() {
            format!("{name}: no SRV target")
        } else {
            unresolved.join("; ")
        };
        return Err(Failure {
            gone: unresolved.is_empty(),
            message,
        });
    }
    out.sort();
    out.dedup();
    Ok((out, until))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(ips: &[&str]) -> Outcome {
        Ok(DnsAnswer::Addresses(
            ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        ))
    }

    fn failed(gone: bool) -> Outcome {
        Err(Failure {
            gone,
            message: "x".to_owned(),
        })
    }

    #[test]
    fn a_failure_keeps_the_last_answer_and_gone_empties_it_only_after_max_ttl() {
        let mut entry = Entry::default();
        assert!(apply(&mut entry, addresses(&["10.0.0.1"]), Duration::ZERO));
        assert!(!apply(&mut entry, addresses(&["10.0.0.1"]), Duration::ZERO));
        // A timeout or SERVFAIL: kept however long.
        assert!(!apply(&mut entry, failed(false), Duration::ZERO));
        assert!(entry.answer.is_some() && entry.error.is_some());
        // Gone, with a long max_ttl: kept for now.
        assert!(!apply(&mut entry, failed(true), Duration::from_secs(60)));
        assert!(entry.answer.is_some());
        // A good answer clears the clock and the error.
        assert!(apply(&mut entry, addresses(&["10.0.0.2"]), Duration::ZERO));
        assert!(entry.error.is_none());
        // Gone for max_ttl (zero here): emptied.
        assert!(apply(&mut entry, failed(true), Duration::ZERO));
        assert!(entry.answer.is_none());
        assert_eq!((entry.updates, entry.failures), (3, 3));
    }
}
