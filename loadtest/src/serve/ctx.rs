//! What a benchmark origin is asked to serve, and what every connection
//! of one of its workers shares.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::stats::Stats;
use crate::duration::{Delay, Rng};

/// The path that answers the origin's counters instead of a canned body.
pub const STATS_PATH: &str = "/__ringload/stats";

/// What the origin answers and where.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Worker threads (each pinned, each with its own listener).
    pub workers: usize,
    /// Bytes of body in each response.
    pub body_size: usize,
    /// Wait before each response.
    pub delay: Delay,
    /// Status code of each response.
    pub status: u16,
    /// Answer with the request's head and body instead of a canned body.
    pub echo: bool,
    /// Value of `x-ringload-server`.
    pub name: String,
    /// TLS configuration; `None` for plain HTTP and h2c.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// What every connection of one worker shares.
#[derive(Debug)]
pub(super) struct Ctx {
    pub(super) id: usize,
    pub(super) opts: ServeOptions,
    pub(super) stats: Arc<Stats>,
    pub(super) rng: RefCell<Rng>,
    /// The canned response, head and body, for GET-like requests.
    pub(super) full: Bytes,
    /// The same head without its body, for HEAD.
    pub(super) head_only: Bytes,
    /// The canned body alone (h2 sends head and body separately).
    pub(super) body: Bytes,
}

impl Ctx {
    /// `head` is the canned response head for `opts`.
    pub(super) fn new(id: usize, opts: ServeOptions, stats: Arc<Stats>, head: Vec<u8>) -> Ctx {
        let body = Bytes::from(vec![b'x'; opts.body_size]);
        let mut full = Vec::with_capacity(head.len() + body.len());
        full.extend_from_slice(&head);
        full.extend_from_slice(&body);
        let seed = 0x5eed ^ (id as u64) << 32 ^ u64::from(std::process::id());
        Ctx {
            id,
            rng: RefCell::new(Rng::new(seed)),
            full: Bytes::from(full),
            head_only: Bytes::from(head),
            body,
            opts,
            stats,
        }
    }

    /// The wait before the next response (zero most of the time).
    pub(super) fn next_delay(&self) -> Duration {
        if self.opts.delay.is_zero() {
            Duration::ZERO
        } else {
            self.opts.delay.sample(&mut self.rng.borrow_mut())
        }
    }
}
