//! The admin listener: a small blocking HTTP/1.1 server off the request
//! path. Each connection is served on its own short-lived thread, at most
//! [`MAX_CLIENTS`] at once (more are answered 503 at once), so a client
//! that connects and sends nothing delays nobody's `/ready`.
//!
//! - `GET /healthz`: the process is alive.
//! - `GET /ready`: configuration loaded and listeners open (503 once
//!   draining).
//! - `GET /metrics`: Prometheus text format, summed over the workers.
//! - `GET /clusters`: endpoints with health, weight, in-flight requests,
//!   idle connections and ejection.
//! - `GET /config`: the generation and the running file.
//! - `POST /reload`: reload the file now; the new generation or the error.
//! - `POST /drain`: stop accepting, finish in-flight requests, stay up and
//!   report not ready.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use futures_channel::mpsc::UnboundedSender;
use ringway_config::Published;

use super::events::{Cause, Event, ReloadStats};
use crate::metrics::{self, ControlValues};
use crate::worker::run::Command;

/// What the admin listener reads.
#[derive(Debug)]
pub(super) struct AdminState {
    /// The running snapshot.
    pub published: Arc<Published>,
    /// Reload outcomes.
    pub stats: Arc<ReloadStats>,
    /// The workers, to scrape.
    pub workers: Vec<UnboundedSender<Command>>,
    /// What `POST` requests must carry as `Authorization: Bearer`, if set.
    pub token: Option<String>,
    /// What DNS said of the endpoint names.
    pub dns: crate::discovery::Status,
}

/// Admin connections served at once.
const MAX_CLIENTS: usize = 32;
/// How long an admin client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `POST /reload` waits for the control thread.
const RELOAD_WAIT: Duration = Duration::from_secs(30);

/// How often the admin thread looks whether it should stop accepting.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// The running admin listener.
#[derive(Debug)]
pub(super) struct Admin {
    /// The bound address.
    pub addr: SocketAddr,
    /// The address as configured when it was opened (a reload that
    /// changes it does not move it), its key for a hand-over.
    pub configured: SocketAddr,
    /// A copy of its socket, to hand to a new process on upgrade.
    pub socket: TcpListener,
    /// Set to stop accepting (the socket stays open while `socket` does).
    stop: Arc<AtomicBool>,
    /// The accepting thread.
    thread: Option<std::thread::JoinHandle<()>>,
    /// Admin requests being served.
    busy: Arc<AtomicUsize>,
}

impl Admin {
    /// Stops accepting, and returns once the accepting thread has: from
    /// then on every new admin client goes to whoever else holds the
    /// socket (the new process, after a hot upgrade).
    pub(super) fn stop_accepting(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Waits, up to `limit`, for the admin requests being served to end.
    pub(super) fn finish(&self, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        while self.busy.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Starts the admin listener on `inherited` (a socket a previous process
/// handed over) or, without one, on `addr`.
pub(super) fn spawn(
    addr: SocketAddr,
    inherited: Option<TcpListener>,
    state: AdminState,
    events: mpsc::Sender<Event>,
) -> std::io::Result<Admin> {
    let listener = match inherited {
        Some(listener) => listener,
        None => TcpListener::bind(addr)?,
    };
    let bound = listener.local_addr()?;
    let socket = listener.try_clone()?;
    // Non-blocking, with a poll that times out: the thread can stop
    // accepting when told (after a hot upgrade) while the socket lives on
    // in the new process.
    listener.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let state = Arc::new(state);
    let busy = Arc::new(AtomicUsize::new(0));
    let serving = busy.clone();
    let thread = std::thread::Builder::new()
        .name("ringway-admin".to_owned())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        wait_readable(&listener, STOP_CHECK);
                        continue;
                    }
                    Err(_) => {
                        // Out of descriptors, say: do not spin.
                        std::thread::sleep(STOP_CHECK);
                        continue;
                    }
                };
                // Accepted sockets do not inherit O_NONBLOCK on Linux;
                // made sure of, as the reads below rely on timeouts.
                let _ = stream.set_nonblocking(false);
                if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    let _ = respond(&mut stream, 503, &[], "too many admin clients\n");
                    continue;
                }
                let (state, events, done) = (state.clone(), events.clone(), busy.clone());
                let spawned = std::thread::Builder::new()
                    .name("ringway-admin-client".to_owned())
                    .spawn(move || {
                        let _ = serve(stream, &state, &events);
                        done.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
    Ok(Admin {
        addr: bound,
        configured: addr,
        socket,
        stop,
        thread: Some(thread),
        busy: serving,
    })
}

/// Waits until `listener` has a connection to accept, or `limit` passes.
fn wait_readable(listener: &TcpListener, limit: Duration) {
    use std::os::fd::AsRawFd;
    let mut fds = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut fds, 1, millis) };
}

/// Compares in time that does not depend on where the bytes differ.
fn same_secret(given: &[u8], token: &[u8]) -> bool {
    given.len() == token.len() && given.iter().zip(token).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
}

fn serve(
    mut stream: TcpStream,
    state: &AdminState,
    events: &mpsc::Sender<Event>,
) -> std::io::Result<()> {
    let (published, stats) = (&state.published, &state.stats);
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path, authorized) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                let authorized = state.token.as_deref().is_none_or(|token| {
                    req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("authorization")
                            && h.value.strip_prefix(b"Bearer ").is_some_and(|given| {
                                same_secret(given.trim_ascii(), token.as_bytes())
                            })
                    })
                });
                break (
                    req.method.unwrap_or("").to_owned(),
                    req.path.unwrap_or("").to_owned(),
                    authorized,
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => {}
            _ => return respond(&mut stream, 400, &[], "bad request\n"),
        }
    };
    if method == "POST" && !authorized {
        return respond(
            &mut stream,
            401,
            &[("www-authenticate", "Bearer")],
            "a token is needed: Authorization: Bearer TOKEN\n",
        );
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "/healthz") => {
            // The generation every worker serves: a deploy script (or the
            // scale bench) waits on it after putting a new file in place.
            let generation = published.load().generation.to_string();
            respond(
                &mut stream,
                200,
                &[("x-ringway-generation", &generation)],
                "ok\n",
            )
        }
        ("GET", "/ready") => {
            if stats.draining.load(Ordering::Relaxed) {
                respond(&mut stream, 503, &[], "draining\n")
            } else {
                respond(&mut stream, 200, &[], "ready\n")
            }
        }
        ("GET", "/metrics") => {
            let reports = crate::gateway::scrape(&state.workers);
            let control = ControlValues {
                generation: published.generation(),
                reloads_ok: stats.succeeded.load(Ordering::Relaxed),
                reloads_failed: stats.failed.load(Ordering::Relaxed),
                tables_built: stats.tables_built.load(Ordering::Relaxed),
                tables_kept: stats.tables_kept.load(Ordering::Relaxed),
                table_bytes: stats.table_bytes.load(Ordering::Relaxed),
            };
            let mut body = metrics::render(&reports, &control);
            body.push_str(&crate::discovery::render_metrics(
                &published.load(),
                &state.dns,
            ));
            respond(
                &mut stream,
                200,
                &[("content-type", "text/plain; version=0.0.4")],
                &body,
            )
        }
        ("GET", "/clusters") => {
            let mut body = metrics::render_clusters(&crate::gateway::scrape(&state.workers));
            body.push_str(&crate::discovery::describe(&published.load(), &state.dns));
            // A bad endpoints file (or configuration) keeps the last good
            // endpoints: say why they did not change, with file:line:col.
            if let Ok(last) = stats.last_error.lock()
                && let Some(error) = last.as_deref()
            {
                body.push_str(&format!(
                    "# last reload refused (still serving the previous endpoints): {error}\n"
                ));
            }
            respond(&mut stream, 200, &[], &body)
        }
        ("POST", "/drain") => {
            // Not ready from this answer on, not from whenever the control
            // thread gets to the event.
            stats.draining.store(true, Ordering::Relaxed);
            if events.send(Event::Drain).is_err() {
                return respond(&mut stream, 503, &[], "shutting down\n");
            }
            respond(&mut stream, 200, &[], "draining\n")
        }
        ("GET", "/config") => {
            let snapshot = published.load();
            let last_error = stats
                .last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .map_or(String::new(), |e| format!("# last reload refused: {e}\n"));
            let body = format!(
                "# generation {} from {}\n# reloads: {} applied, {} refused\n{last_error}\n{}",
                snapshot.generation,
                snapshot.source_name,
                stats.succeeded.load(Ordering::Relaxed),
                stats.failed.load(Ordering::Relaxed),
                snapshot.source_text
            );
            let generation = snapshot.generation.to_string();
            respond(
                &mut stream,
                200,
                &[("x-ringway-generation", &generation)],
                &body,
            )
        }
        ("POST", "/reload") => {
            let (reply, outcome) = mpsc::channel();
            let event = Event::Reload {
                cause: Cause::Admin,
                reply: Some(reply),
            };
            if events.send(event).is_err() {
                return respond(&mut stream, 503, &[], "shutting down\n");
            }
            match outcome.recv_timeout(RELOAD_WAIT) {
                Ok(Ok(generation)) => {
                    let g = generation.to_string();
                    respond(
                        &mut stream,
                        200,
                        &[("x-ringway-generation", &g)],
                        &format!("generation {g} loaded\n"),
                    )
                }
                Ok(Err(message)) => respond(&mut stream, 400, &[], &format!("{message}\n")),
                Err(_) => respond(&mut stream, 503, &[], "the control thread did not answer\n"),
            }
        }
        (
            _,
            "/healthz" | "/ready" | "/metrics" | "/clusters" | "/config" | "/reload" | "/drain",
        ) => respond(&mut stream, 405, &[], "method not allowed\n"),
        _ => respond(&mut stream, 404, &[], "not found\n"),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\ncontent-length: {}\r\nconnection: close\r\n",
        ringway_codec::http1::reason(status),
        body.len()
    );
    if !headers.iter().any(|(n, _)| *n == "content-type") {
        out.push_str("content-type: text/plain; charset=utf-8\r\n");
    }
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    stream.write_all(out.as_bytes())
}
