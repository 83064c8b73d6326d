//! The control thread: owns the configuration file, reloads it when the
//! file changes, on SIGHUP and on `POST /reload`, and hands each new
//! snapshot to the workers. Workers never parse TOML or wait on it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use ringway_config::{Snapshot, compile_file_text};

mod admin;
mod events;
mod watch;

pub use events::{Cause, Event, ReloadStats};

use crate::discovery;
use crate::gateway::{Error, Gateway, Options, Result};
use crate::upgrade;

/// The gateway with its control thread's inputs: the file, its watcher,
/// the admin listener.
#[derive(Debug)]
pub struct Supervisor {
    gateway: Gateway,
    path: Option<PathBuf>,
    events: mpsc::Receiver<Event>,
    sender: mpsc::Sender<Event>,
    stats: Arc<ReloadStats>,
    admin: Option<admin::Admin>,
    watcher: Option<watch::Watcher>,
    /// The resolver following the endpoint names, while any cluster has one.
    dns: Option<discovery::Resolver>,
    /// What DNS said of every question, kept across resolver restarts.
    dns_status: discovery::Status,
}

/// How long a start or a reload waits for the first answers to new DNS
/// questions before it goes on (a name still unanswered then gets its
/// endpoints when the answer comes).
const FIRST_ANSWERS: std::time::Duration = std::time::Duration::from_secs(5);

impl Supervisor {
    /// Starts the gateway on `snapshot` (compiled from `path`, if any),
    /// the admin listener if configured, and the file watcher. Listeners
    /// (the admin one too) are served on the sockets in `inherited` that a
    /// previous process handed over for them, if any.
    pub fn start(
        path: Option<PathBuf>,
        snapshot: Snapshot,
        options: &Options,
        mut inherited: upgrade::Sockets,
    ) -> Result<Supervisor> {
        let admin_addr = snapshot.admin;
        let (sender, events) = mpsc::channel();
        let (mut dns, dns_status) = (None, discovery::Status::default());
        let mut snapshot = snapshot;
        follow_dns(
            &mut dns,
            &dns_status,
            &mut snapshot,
            Default::default(),
            &sender,
        );
        let gateway = Gateway::start_inheriting(snapshot, options, &mut inherited)?;
        let stats = Arc::new(ReloadStats::default());
        stats.count_tables(&gateway.tables());
        let admin = match admin_addr {
            Some(addr) => Some(
                admin::spawn(
                    addr,
                    inherited
                        .take(&upgrade::admin_key(addr))
                        .into_iter()
                        .next()
                        .map(std::net::TcpListener::from),
                    admin::AdminState {
                        published: gateway.published().clone(),
                        stats: stats.clone(),
                        workers: gateway.scraper(),
                        token: gateway.published().load().admin_token.clone(),
                        dns: dns_status.clone(),
                    },
                    sender.clone(),
                )
                .map_err(|source| Error::Listen {
                    name: "admin".to_owned(),
                    addr,
                    source,
                })?,
            ),
            None => None,
        };
        let watcher = match &path {
            Some(path) => {
                let mut files = vec![path.clone()];
                files.extend(endpoints_files(&gateway.published().load()));
                match watch::Watcher::spawn(&files, sender.clone()) {
                    Ok(watcher) => Some(watcher),
                    Err(e) => {
                        // Reloads still work through SIGHUP and POST /reload.
                        crate::say!("ringway: cannot watch {}: {e}", path.display());
                        None
                    }
                }
            }
            None => None,
        };
        Ok(Supervisor {
            gateway,
            path,
            events,
            sender,
            stats,
            admin,
            watcher,
            dns,
            dns_status,
        })
    }

    /// The running gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// Where this process listens for a new one to hand over to:
    /// `[runtime] upgrade_socket`, or [`upgrade::default_path`].
    pub fn upgrade_path(&self) -> PathBuf {
        upgrade_path(&self.gateway.published().load())
    }

    /// Listens on the upgrade socket for a new process to hand over to.
    /// `after_takeover`: this process took over from another, whose
    /// socket file is replaced.
    pub fn serve_upgrades(&self, after_takeover: bool) -> std::io::Result<PathBuf> {
        let path = self.upgrade_path();
        let listener = if after_takeover {
            upgrade::listen_after_takeover(&path)
        } else {
            upgrade::listen(&path)
        }
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        upgrade::spawn_server(listener, ControlHandover(self.sender.clone()))?;
        Ok(path)
    }

    /// A handle to send events (signals, tests).
    pub fn sender(&self) -> mpsc::Sender<Event> {
        self.sender.clone()
    }

    /// Reload outcomes so far.
    pub fn stats(&self) -> &Arc<ReloadStats> {
        &self.stats
    }

    /// Handles events until [`Event::Shutdown`], then drains the gateway.
    pub fn run(mut self) {
        while let Ok(event) = self.events.recv() {
            match event {
                Event::Reload { cause, reply } => {
                    let outcome = self.reload(cause);
                    if let Some(reply) = reply {
                        let _ = reply.send(outcome);
                    }
                }
                Event::Drain => {
                    self.stats.draining.store(true, Ordering::Relaxed);
                    crate::say!("ringway: draining on request; not accepting any more");
                    self.gateway.shutdown();
                }
                Event::ReopenLogs => self.gateway.reopen_logs(),
                Event::Resolved => self.apply_answers(),
                Event::Shutdown => break,
                Event::Handover { reply } => {
                    let mut sockets = self.gateway.handover_sockets();
                    if let Some(admin) = &self.admin
                        && let Ok(copy) = admin.socket.try_clone()
                    {
                        sockets.push(upgrade::admin_key(admin.configured), vec![copy.into()]);
                    }
                    let _ = reply.send(sockets);
                }
                Event::StopAdmin { done } => {
                    // The new process answers the admin socket from now on;
                    // what this one accepted is answered first, while its
                    // workers still answer scrapes.
                    if let Some(admin) = &mut self.admin {
                        admin.stop_accepting();
                        admin.finish(ADMIN_FINISH);
                    }
                    let _ = done.send(());
                }
                Event::Upgraded => {
                    crate::say!("ringway: upgrade: the new process serves; draining");
                    self.gateway.join();
                    return;
                }
            }
        }
        // Not ready from the moment the drain starts, however it started
        // (SIGTERM, SIGINT): a load balancer or Kubernetes stops sending
        // new traffic while the requests in flight finish.
        self.stats.draining.store(true, Ordering::Relaxed);
        self.gateway.join();
    }

    /// Reads, validates and applies the file; on any error the running
    /// configuration stays and the error says where.
    pub fn reload(&mut self, cause: Cause) -> Result<u64, String> {
        let Some(path) = &self.path else {
            return Err("no configuration file to reload: running the built-in default".to_owned());
        };
        let running = self.gateway.published().load();
        let outcome = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))
            .and_then(|text| {
                let discovers = !endpoints_files(&running).is_empty();
                if cause == Cause::FileChanged && text == running.source_text && !discovers {
                    // An event that changed nothing we serve (a touch, an
                    // editor's temporary file): not a reload.
                    return Ok(None);
                }
                // Relative file names resolve against the config's folder,
                // as they did at start.
                let mut next = compile_file_text(path, &text).map_err(|e| e.to_string())?;
                // The running configuration's names stay followed until
                // this one is applied: a refused reload must not leave
                // the running one without answers.
                let also = running.dns_queries();
                follow_dns(
                    &mut self.dns,
                    &self.dns_status,
                    &mut next,
                    also,
                    &self.sender,
                );
                if cause == Cause::FileChanged
                    && text == running.source_text
                    && same_endpoints(&next, &running)
                {
                    return Ok(None);
                }
                if let Some(watcher) = &self.watcher
                    && let Err(e) = watcher.watch(&endpoints_files(&next))
                {
                    crate::say!("ringway: cannot watch an endpoints file: {e}");
                }
                let stored = self.gateway.reload(next).map_err(|e| e.to_string())?;
                Ok(Some(stored.generation))
            });
        // Decided, either way: follow the names of what is served now.
        if let Some(dns) = &self.dns {
            let served = self.gateway.published().load().dns_queries();
            dns.follow(served, std::time::Duration::ZERO);
        }
        match outcome {
            Ok(None) => {
                // What is on disk is what runs: an earlier refusal (a bad
                // endpoints file put back as it was) no longer stands.
                if let Ok(mut last) = self.stats.last_error.lock() {
                    *last = None;
                }
                Ok(running.generation)
            }
            Ok(Some(generation)) => {
                self.stats.succeeded.fetch_add(1, Ordering::Relaxed);
                self.stats.count_tables(&self.gateway.tables());
                if let Ok(mut last) = self.stats.last_error.lock() {
                    *last = None;
                }
                crate::say!("ringway: generation {generation} loaded ({cause:?})");
                Ok(generation)
            }
            Err(message) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                crate::say!(
                    "ringway: reload refused, still serving generation {}: {message}",
                    running.generation
                );
                if let Ok(mut last) = self.stats.last_error.lock() {
                    *last = Some(message.clone());
                }
                Err(message)
            }
        }
    }
}

impl Supervisor {
    /// DNS changed an answer: the workers get the running configuration
    /// with the endpoints the answers now make (no file is read).
    fn apply_answers(&mut self) {
        let Some(dns) = &self.dns else { return };
        let running = self.gateway.published().load();
        let mut next = Snapshot::clone(&running);
        let answers = dns.answers();
        if !next.resolve(&|q| answers.get(q).cloned()) {
            return;
        }
        let moved: Vec<String> = next
            .clusters
            .iter()
            .zip(&running.clusters)
            .filter(|(a, b)| a.endpoints != b.endpoints)
            .map(|(c, _)| format!("{} ({} endpoints)", c.name, c.endpoints.len()))
            .collect();
        // A few names, then a count: one line however many clusters moved.
        let mut said = moved[..moved.len().min(5)].join(", ");
        if moved.len() > 5 {
            said.push_str(&format!(" and {} more", moved.len() - 5));
        }
        match self.gateway.reload(next) {
            Ok(stored) => crate::say!(
                "ringway: generation {} loaded (DNS): {said}",
                stored.generation
            ),
            Err(e) => crate::say!("ringway: DNS answers not applied: {e}"),
        }
    }
}

/// Starts, keeps or restarts the resolver for the questions of `snapshot`
/// and `also` (stops it when there are none), waits up to
/// [`FIRST_ANSWERS`] for the first answers to new ones, and gives
/// `snapshot` the endpoints the answers make. Never fails: a name without
/// an answer leaves its cluster without those endpoints (503 with a
/// reason) until one comes.
fn follow_dns(
    dns: &mut Option<discovery::Resolver>,
    status: &discovery::Status,
    snapshot: &mut Snapshot,
    also: std::collections::BTreeSet<ringway_config::DnsQuery>,
    events: &mpsc::Sender<Event>,
) {
    let mut queries = snapshot.dns_queries();
    queries.extend(also);
    if queries.is_empty() {
        *dns = None;
        if let Ok(mut known) = status.lock() {
            known.clear();
        }
        return;
    }
    if dns
        .as_ref()
        .is_none_or(|r| r.settings() != &snapshot.runtime.dns)
    {
        let events = events.clone();
        let changed = move || {
            let _ = events.send(Event::Resolved);
        };
        match discovery::Resolver::start(&snapshot.runtime.dns, status.clone(), changed) {
            Ok(resolver) => *dns = Some(resolver),
            Err(e) => {
                crate::say!("ringway: cannot start the DNS resolver: {e}");
                *dns = None;
                return;
            }
        }
    }
    if let Some(resolver) = dns {
        resolver.follow(queries, FIRST_ANSWERS);
        let answers = resolver.answers();
        snapshot.resolve(&|q| answers.get(q).cloned());
        for c in &snapshot.clusters {
            if c.endpoints.is_empty() {
                crate::say!(
                    "ringway: cluster {} has no endpoint yet: {}",
                    c.name,
                    discovery::why_empty(c, status)
                );
            }
        }
    }
}

/// Where a process running `snapshot` listens for a new one.
pub fn upgrade_path(snapshot: &Snapshot) -> PathBuf {
    snapshot
        .runtime
        .upgrade_socket
        .clone()
        .unwrap_or_else(upgrade::default_path)
}

/// The control thread's side of a hand-over, for the upgrade server's
/// thread: asks for the sockets and reports the upgrade as events.
struct ControlHandover(mpsc::Sender<Event>);

/// How long an old process waits for its admin requests to be answered
/// before it exits after an upgrade.
const ADMIN_FINISH: std::time::Duration = std::time::Duration::from_secs(5);

/// How long the control thread may take to gather the sockets.
const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl upgrade::Handover for ControlHandover {
    fn sockets(&mut self) -> std::io::Result<upgrade::Sockets> {
        let gone = || std::io::Error::other("the control thread is not answering");
        let (reply, sockets) = mpsc::channel();
        self.0.send(Event::Handover { reply }).map_err(|_| gone())?;
        sockets.recv_timeout(HANDOVER_WAIT).map_err(|_| gone())
    }

    fn stop_admin(&mut self) {
        let (done, stopped) = mpsc::channel();
        if self.0.send(Event::StopAdmin { done }).is_ok() {
            let _ = stopped.recv_timeout(HANDOVER_WAIT);
        }
    }

    fn upgraded(&mut self) {
        let _ = self.0.send(Event::Upgraded);
    }
}

/// The endpoints files the clusters of `snapshot` discover endpoints from.
fn endpoints_files(snapshot: &Snapshot) -> Vec<PathBuf> {
    snapshot
        .clusters
        .iter()
        .filter_map(|c| c.endpoints_file.clone())
        .collect()
}

/// Whether every cluster of `a` has the endpoints it has in `b`.
fn same_endpoints(a: &Snapshot, b: &Snapshot) -> bool {
    a.clusters.len() == b.clusters.len()
        && a.clusters
            .iter()
            .zip(&b.clusters)
            .all(|(x, y)| x.name == y.name && x.endpoints == y.endpoints)
}
