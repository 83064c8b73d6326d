//! Active health checks: one thread per checked endpoint for the whole
//! process, so an endpoint is checked once per interval however many
//! workers there are. Verdicts go to the workers through shared flags that
//! only the checker writes (and only when the verdict changes).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringway_config::{HealthCheck, ProxyProtocol, Snapshot};

use crate::upstream::cluster::HealthTable;

/// The running checks, keyed by cluster name and endpoint address.
#[derive(Debug, Default)]
pub(crate) struct HealthChecker {
    checks: HashMap<(String, SocketAddr), Check>,
    /// Verdicts a previous process handed over (hot upgrade): a check
    /// started for one of these endpoints starts from it rather than from
    /// healthy.
    seeds: HashMap<(String, SocketAddr), bool>,
}

#[derive(Debug)]
struct Check {
    healthy: Arc<AtomicBool>,
    config: Arc<Mutex<Probe>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::Thread,
}

impl HealthChecker {
    /// A checker whose checks start from `verdicts` (cluster, endpoint,
    /// healthy) where they have one.
    pub(crate) fn seeded(verdicts: Vec<(String, SocketAddr, bool)>) -> HealthChecker {
        HealthChecker {
            checks: HashMap::new(),
            seeds: verdicts
                .into_iter()
                .map(|(cluster, addr, healthy)| ((cluster, addr), healthy))
                .collect(),
        }
    }

    /// Every checked endpoint's verdict now: (cluster, endpoint, healthy).
    pub(crate) fn verdicts(&self) -> Vec<(String, SocketAddr, bool)> {
        self.checks
            .iter()
            .map(|((cluster, addr), check)| {
                (
                    cluster.clone(),
                    *addr,
                    check.healthy.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Starts, keeps or stops checks to match `snapshot`, and returns its
    /// health table. A check that continues keeps its verdict.
    pub(crate) fn update(&mut self, snapshot: &Snapshot) -> Arc<HealthTable> {
        let mut table = Vec::with_capacity(snapshot.clusters.len());
        let mut live = HashMap::with_capacity(self.checks.len());
        for cluster in &snapshot.clusters {
            let mut row = Vec::with_capacity(cluster.endpoints.len());
            for endpoint in &cluster.endpoints {
                let Some(config) = &cluster.health else {
                    // Unchecked endpoints are always healthy.
                    row.push(Arc::new(AtomicBool::new(true)));
                    continue;
                };
                let key = (cluster.name.clone(), endpoint.addr);
                let probe = Probe {
                    check: config.clone(),
                    proxy_protocol: cluster.proxy_protocol,
                };
                let check = match self.checks.remove(&key) {
                    Some(check) => {
                        if let Ok(mut c) = check.config.lock() {
                            *c = probe;
                        }
                        check
                    }
                    None => {
                        let healthy = self.seeds.remove(&key).unwrap_or(true);
                        spawn(&cluster.name, endpoint.addr, probe, healthy)
                    }
                };
                row.push(check.healthy.clone());
                live.insert(key, check);
            }
            table.push(row);
        }
        // A handed-over verdict counts for the first start only: an
        // endpoint that comes back hours later starts healthy.
        self.seeds.clear();
        // What is left was not in the snapshot: stop it.
        for check in self.checks.values() {
            check.stop.store(true, Ordering::Relaxed);
            check.thread.unpark();
        }
        self.checks = live;
        Arc::new(table)
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for check in self.checks.values() {
            check.stop.store(true, Ordering::Relaxed);
            check.thread.unpark();
        }
    }
}

/// What one endpoint's check thread does each interval.
#[derive(Debug, Clone)]
struct Probe {
    check: HealthCheck,
    /// The cluster's connections start with a PROXY protocol header.
    proxy_protocol: Option<ProxyProtocol>,
}

/// Starts checking `addr`, from the verdict `healthy`: true at a start
/// (healthy until proven otherwise: a restart must not black-hole traffic
/// for the first interval), or the previous process's after an upgrade.
fn spawn(cluster: &str, addr: SocketAddr, config: Probe, healthy: bool) -> Check {
    let healthy = Arc::new(AtomicBool::new(healthy));
    let config = Arc::new(Mutex::new(config));
    let stop = Arc::new(AtomicBool::new(false));
    let (h, c, s) = (healthy.clone(), config.clone(), stop.clone());
    let name = cluster.to_owned();
    let handle = std::thread::Builder::new()
        .name(format!("ringway-health-{addr}"))
        .spawn(move || run(&name, addr, &h, &c, &s));
    let thread = match handle {
        Ok(handle) => handle.thread().clone(),
        Err(e) => {
            crate::say!("ringway: cannot start health checks of {addr}: {e}");
            std::thread::current()
        }
    };
    Check {
        healthy,
        config,
        stop,
        thread,
    }
}

fn run(
    cluster: &str,
    addr: SocketAddr,
    healthy: &AtomicBool,
    config: &Mutex<Probe>,
    stop: &AtomicBool,
) {
    let (mut passes, mut failures) = (0u32, 0u32);
    while !stop.load(Ordering::Relaxed) {
        let Ok(Probe {
            check,
            proxy_protocol,
        }) = config.lock().map(|c| c.clone())
        else {
            return;
        };
        let started = Instant::now();
        match probe(addr, &check, proxy_protocol) {
            Ok(()) => {
                passes += 1;
                failures = 0;
                if !healthy.load(Ordering::Relaxed) && passes >= check.healthy_threshold {
                    healthy.store(true, Ordering::Relaxed);
                    crate::say!("ringway: cluster {cluster}: endpoint {addr} is healthy again");
                }
            }
            Err(why) => {
                failures += 1;
                passes = 0;
                if healthy.load(Ordering::Relaxed) && failures >= check.unhealthy_threshold {
                    healthy.store(false, Ordering::Relaxed);
                    crate::say!("ringway: cluster {cluster}: endpoint {addr} is unhealthy: {why}");
                }
            }
        }
        // Parked until the next check is due, or woken to stop.
        let next = started + check.interval;
        while !stop.load(Ordering::Relaxed) {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::park_timeout(left);
        }
    }
}

/// One check: a GET of the path; a 2xx or 3xx within the timeout passes.
/// To a cluster whose connections start with a PROXY protocol header, the
/// check's does too, naming nobody (v2 `LOCAL`, v1 `UNKNOWN`): the
/// connection is the gateway's own.
fn probe(
    addr: SocketAddr,
    check: &HealthCheck,
    proxy_protocol: Option<ProxyProtocol>,
) -> Result<(), String> {
    let deadline = Instant::now() + check.timeout;
    let mut stream = TcpStream::connect_timeout(&addr, check.timeout).map_err(|e| e.to_string())?;
    let left = |deadline: Instant| {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream
        .set_write_timeout(Some(left(deadline)))
        .map_err(|e| e.to_string())?;
    let mut request = proxy_protocol
        .map(|version| crate::upstream::proxy_protocol::header(version, None))
        .unwrap_or_default();
    write!(
        request,
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ringway-health-check\r\nConnection: close\r\n\r\n",
        check.path
    )
    .map_err(|e| e.to_string())?;
    stream.write_all(&request).map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    loop {
        stream
            .set_read_timeout(Some(left(deadline)))
            .map_err(|e| e.to_string())?;
        let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before answering".to_owned());
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {
                let status = resp.code.unwrap_or(0);
                return if (200..400).contains(&status) {
                    Ok(())
                } else {
                    Err(format!("answered {status}"))
                };
            }
            Ok(httparse::Status::Partial) if head.len() < 16 * 1024 => {}
            _ => return Err("answered something that is not HTTP".to_owned()),
        }
        if Instant::now() >= deadline {
            return Err("timed out".to_owned());
        }
    }
}
