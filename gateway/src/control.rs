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

use crate::gateway::{Error, Gateway, Options, Result};

/// The gateway with its control thread's inputs: the file, its watcher,
/// the admin listener.
#[derive(Debug)]
pub struct Supervisor {
    gateway: Gateway,
    path: Option<PathBuf>,
    events: mpsc::Receiver<Event>,
    sender: mpsc::Sender<Event>,
    stats: Arc<ReloadStats>,
    admin: Option<std::net::SocketAddr>,
}

impl Supervisor {
    /// Starts the gateway on `snapshot` (compiled from `path`, if any),
    /// the admin listener if configured, and the file watcher.
    pub fn start(
        path: Option<PathBuf>,
        snapshot: Snapshot,
        options: &Options,
    ) -> Result<Supervisor> {
        let admin_addr = snapshot.admin;
        let gateway = Gateway::start(snapshot, options)?;
        let (sender, events) = mpsc::channel();
        let stats = Arc::new(ReloadStats::default());
        stats.count_tables(&gateway.tables());
        let admin = match admin_addr {
            Some(addr) => Some(
                admin::spawn(
                    addr,
                    admin::AdminState {
                        published: gateway.published().clone(),
                        stats: stats.clone(),
                        workers: gateway.scraper(),
                        token: gateway.published().load().admin_token.clone(),
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
        if let Some(path) = &path
            && let Err(e) = watch::spawn(path, sender.clone())
        {
            // Reloads still work through SIGHUP and POST /reload.
            crate::say!("ringway: cannot watch {}: {e}", path.display());
        }
        Ok(Supervisor {
            gateway,
            path,
            events,
            sender,
            stats,
            admin,
        })
    }

    /// The running gateway.
    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin
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
                Event::Shutdown => break,
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
                if cause == Cause::FileChanged && text == running.source_text {
                    // An event that changed nothing we serve (a touch, an
                    // editor's temporary file): not a reload.
                    return Ok(None);
                }
                // Relative file names resolve against the config's folder,
                // as they did at start.
                let next = compile_file_text(path, &text).map_err(|e| e.to_string())?;
                let stored = self.gateway.reload(next).map_err(|e| e.to_string())?;
                Ok(Some(stored.generation))
            });
        match outcome {
            Ok(None) => Ok(running.generation),
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
