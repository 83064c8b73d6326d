//! The health thread: one tokio current_thread runtime, one task per
//! checked endpoint. The checker sends it the whole wanted set at every
//! update; it starts the tasks of new checks, hands continuing ones their
//! new probe (their thresholds' counts and their verdict stay) and aborts
//! the rest. When the checker hangs up, everything stops.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_channel::mpsc::UnboundedReceiver;
use futures_core::Stream;
use tokio::task::JoinHandle;

use super::probe::Probe;

/// A check's identity: its cluster's name and the endpoint's address.
pub(crate) type Key = (String, SocketAddr);

/// One check the checker wants running.
#[derive(Debug)]
pub(crate) struct Wanted {
    pub(crate) key: Key,
    pub(crate) probe: Probe,
    /// The verdict the workers read; written by this check only, and only
    /// when it changes.
    pub(crate) healthy: Arc<AtomicBool>,
}

/// Starts the thread; it runs until `wanted` is closed.
pub(crate) fn start(
    wanted: UnboundedReceiver<Vec<Wanted>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ringway-health".to_owned())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build();
            match runtime {
                Ok(runtime) => {
                    tokio::task::LocalSet::new().block_on(&runtime, supervise(wanted));
                }
                Err(e) => crate::say!("ringway: health checks cannot start: {e}"),
            }
        })
}

/// A running check: the probe it uses next, and its task.
struct Running {
    current: Rc<RefCell<Rc<Wanted>>>,
    task: JoinHandle<()>,
}

async fn supervise(mut wanted: UnboundedReceiver<Vec<Wanted>>) {
    let mut running: HashMap<Key, Running> = HashMap::new();
    while let Some(set) = std::future::poll_fn(|cx| Pin::new(&mut wanted).poll_next(cx)).await {
        let mut live = HashMap::with_capacity(set.len());
        let mut new = Vec::new();
        for want in set {
            let key = want.key.clone();
            match running.remove(&key) {
                Some(check) => {
                    // Continues: its next round uses the new probe.
                    *check.current.borrow_mut() = Rc::new(want);
                    live.insert(key, check);
                }
                None => new.push(want),
            }
        }
        // New checks start within their first interval (at most a second),
        // spread over it: a thousand endpoints are not a thousand
        // connections in the same millisecond, every interval.
        let count = new.len().max(1) as u32;
        for (i, want) in new.into_iter().enumerate() {
            let spread = want.probe.check.interval.min(Duration::from_secs(1));
            let first = spread / count * i as u32;
            let key = want.key.clone();
            let current = Rc::new(RefCell::new(Rc::new(want)));
            let task = tokio::task::spawn_local(run(current.clone(), first));
            if let Some(twin) = live.insert(key, Running { current, task }) {
                twin.task.abort();
            }
        }
        // What is left was not wanted: stop it.
        for (_, check) in running.drain() {
            check.task.abort();
        }
        running = live;
    }
    for check in running.values() {
        check.task.abort();
    }
}

/// Checks one endpoint each interval, the first time after `first`,
/// until aborted.
async fn run(current: Rc<RefCell<Rc<Wanted>>>, first: Duration) {
    tokio::time::sleep(first).await;
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        // Not borrowed across an await: an update may replace it meanwhile.
        let want = current.borrow().clone();
        let ((cluster, addr), check) = (&want.key, &want.probe.check);
        let started = tokio::time::Instant::now();
        let verdict = match tokio::time::timeout(check.timeout, want.probe.once(*addr)).await {
            Ok(verdict) => verdict,
            Err(_) => Err("timed out".to_owned()),
        };
        let healthy = &want.healthy;
        match verdict {
            Ok(()) => {
                passes = passes.saturating_add(1);
                failures = 0;
                if !healthy.load(Ordering::Relaxed) && passes >= check.healthy_threshold {
                    healthy.store(true, Ordering::Relaxed);
                    crate::say!("ringway: cluster {cluster}: endpoint {addr} is healthy again");
                }
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                passes = 0;
                if healthy.load(Ordering::Relaxed) && failures >= check.unhealthy_threshold {
                    healthy.store(false, Ordering::Relaxed);
                    crate::say!("ringway: cluster {cluster}: endpoint {addr} is unhealthy: {why}");
                }
            }
        }
        tokio::time::sleep_until(started + check.interval).await;
    }
}
