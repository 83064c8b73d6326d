//! Active health checks, for the whole process: an endpoint is checked
//! once per interval however many workers there are. The checks are async
//! tasks on one thread (`ringway-health`, a tokio current_thread runtime),
//! so a thousand endpoints cost a thousand small tasks, not a thousand
//! threads. Verdicts go to the workers through shared flags that only the
//! checks write (and only when a verdict changes).
//!
//! A check speaks the cluster's own protocol over its own transport
//! (`probe`): its PROXY header, its TLS, HTTP/1.1 or HTTP/2, or gRPC's
//! health service; `task` runs the thread and its tasks.

mod grpc;
mod probe;
mod task;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_channel::mpsc::{UnboundedSender, unbounded};
use ringway_config::{
    Cluster, Endpoint, HealthCheck, HealthKind, Snapshot, UpstreamProtocol, UpstreamTls,
};
use rustls::ClientConfig;

use crate::upstream::cluster::HealthTable;
use probe::{Probe, Transport};
use task::{Key, Wanted};

/// The running checks, keyed by cluster name and endpoint address.
#[derive(Debug, Default)]
pub(crate) struct HealthChecker {
    /// Each wanted check's verdict, shared with the workers.
    verdicts: HashMap<Key, Arc<AtomicBool>>,
    /// Verdicts a previous process handed over (hot upgrade): a check
    /// started for one of these endpoints starts from it rather than from
    /// healthy.
    seeds: HashMap<Key, bool>,
    /// Each checked TLS cluster's client configuration, kept while its
    /// settings do not change so that checks resume their TLS sessions
    /// across reloads.
    tls: HashMap<String, (UpstreamTls, Arc<ClientConfig>)>,
    /// The health thread, started with the first check.
    thread: Option<Thread>,
}

#[derive(Debug)]
struct Thread {
    wanted: UnboundedSender<Vec<Wanted>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl HealthChecker {
    /// A checker whose checks start from `verdicts` (cluster, endpoint,
    /// healthy) where they have one.
    pub(crate) fn seeded(verdicts: Vec<(String, SocketAddr, bool)>) -> HealthChecker {
        HealthChecker {
            seeds: verdicts
                .into_iter()
                .map(|(cluster, addr, healthy)| ((cluster, addr), healthy))
                .collect(),
            ..HealthChecker::default()
        }
    }

    /// Every checked endpoint's verdict now: (cluster, endpoint, healthy).
    pub(crate) fn verdicts(&self) -> Vec<(String, SocketAddr, bool)> {
        self.verdicts
            .iter()
            .map(|((cluster, addr), healthy)| {
                (cluster.clone(), *addr, healthy.load(Ordering::Relaxed))
            })
            .collect()
    }

    /// Starts, keeps or stops checks to match `snapshot`, and returns its
    /// health table. A check that continues keeps its verdict and its
    /// thresholds' counts.
    pub(crate) fn update(&mut self, snapshot: &Snapshot) -> Arc<HealthTable> {
        let mut table = Vec::with_capacity(snapshot.clusters.len());
        let mut live: HashMap<Key, Arc<AtomicBool>> = HashMap::new();
        let mut wanted = Vec::new();
        let mut tls = HashMap::new();
        // Clusters already checked: an endpoint that joins one of them
        // (a new DNS address, a line added to an endpoints file) takes
        // traffic after its first passing check, not before.
        let checked: std::collections::HashSet<String> = self
            .verdicts
            .keys()
            .map(|(cluster, _)| cluster.clone())
            .collect();
        for cluster in &snapshot.clusters {
            let Some(check) = &cluster.health else {
                // Unchecked endpoints are always healthy.
                table.push(
                    cluster
                        .endpoints
                        .iter()
                        .map(|_| Arc::new(AtomicBool::new(true)))
                        .collect(),
                );
                continue;
            };
            let config = self.client_config(cluster, check, &mut tls);
            let mut row = Vec::with_capacity(cluster.endpoints.len());
            for endpoint in &cluster.endpoints {
                let key = (cluster.name.clone(), endpoint.addr);
                if let Some(healthy) = live.get(&key) {
                    // The same address twice in one cluster: one check.
                    row.push(healthy.clone());
                    continue;
                }
                let joins = checked.contains(&cluster.name);
                let healthy = self.verdicts.remove(&key).unwrap_or_else(|| {
                    // The previous process's verdict after an upgrade;
                    // else, in a cluster already checked, unhealthy until
                    // its first check passes; else healthy until proven
                    // otherwise (a start or a new cluster must not
                    // black-hole traffic for the first interval).
                    let first = self.seeds.remove(&key).unwrap_or(!joins);
                    Arc::new(AtomicBool::new(first))
                });
                wanted.push(Wanted {
                    key: key.clone(),
                    probe: probe(cluster, endpoint, check, &config),
                    healthy: healthy.clone(),
                });
                row.push(healthy.clone());
                live.insert(key, healthy);
            }
            table.push(row);
        }
        // A handed-over verdict counts for the first start only: an
        // endpoint that comes back hours later starts healthy.
        self.seeds.clear();
        self.verdicts = live;
        self.tls = tls;
        self.send(wanted);
        Arc::new(table)
    }

    /// Hands the wanted set to the health thread, starting it for the
    /// first checks.
    fn send(&mut self, wanted: Vec<Wanted>) {
        if self.thread.is_none() {
            if wanted.is_empty() {
                return;
            }
            let (tx, rx) = unbounded();
            match task::start(rx) {
                Ok(handle) => {
                    self.thread = Some(Thread {
                        wanted: tx,
                        handle: Some(handle),
                    });
                }
                Err(e) => {
                    crate::say!("ringway: cannot start health checks: {e}");
                    return;
                }
            }
        }
        if let Some(thread) = &self.thread
            && thread.wanted.unbounded_send(wanted).is_err()
        {
            crate::say!("ringway: the health check thread has stopped");
        }
    }

    /// The TLS client configuration of `cluster`'s checks (`None` for a
    /// plain cluster), reused from the last update when its settings did
    /// not change, and kept in `next`.
    fn client_config(
        &self,
        cluster: &Cluster,
        check: &HealthCheck,
        next: &mut HashMap<String, (UpstreamTls, Arc<ClientConfig>)>,
    ) -> Option<Result<Arc<ClientConfig>, String>> {
        let mut settings = cluster.tls.clone()?;
        if matches!(check.kind, HealthKind::Grpc { .. }) {
            // gRPC is HTTP/2 whatever the cluster's requests speak.
            settings.alpn = vec![b"h2".to_vec()];
        }
        let config = match self.tls.get(&cluster.name) {
            Some((kept, config)) if *kept == settings => config.clone(),
            _ => match crate::tls::client_config(&settings) {
                Ok(config) => config,
                Err(e) => return Some(Err(format!("TLS settings: {e}"))),
            },
        };
        next.insert(cluster.name.clone(), (settings, config.clone()));
        Some(Ok(config))
    }
}

/// What checking `endpoint` of `cluster` takes.
fn probe(
    cluster: &Cluster,
    endpoint: &Endpoint,
    check: &HealthCheck,
    config: &Option<Result<Arc<ClientConfig>, String>>,
) -> Probe {
    let transport = match (config, &cluster.tls) {
        (Some(Ok(config)), Some(tls)) => match crate::tls::server_name_for(tls, &endpoint.host) {
            Ok(name) => Transport::Tls {
                config: config.clone(),
                name,
            },
            Err(e) => Transport::Broken(format!("TLS name: {e}")),
        },
        (Some(Err(why)), _) => Transport::Broken(why.clone()),
        _ => Transport::Plain,
    };
    Probe {
        check: check.clone(),
        proxy_protocol: cluster.proxy_protocol,
        h2: cluster.protocol == UpstreamProtocol::Http2,
        transport,
        authority: check
            .host
            .clone()
            .unwrap_or_else(|| probe::authority(&endpoint.host, endpoint.addr.port())),
    }
}

impl Drop for Thread {
    /// Stops every check (the thread sees the channel close, aborts its
    /// tasks and ends) and waits for the thread: dropping the checker
    /// stops everything.
    fn drop(&mut self) {
        self.wanted.close_channel();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
