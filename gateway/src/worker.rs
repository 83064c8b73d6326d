//! One worker: a thread, its io_uring runtime, its listeners, its pool and
//! its balancer state. Nothing here is shared with another worker.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::oneshot;
use monoio::net::TcpListener;
use ringway_balancer::{EndpointId, RoundRobin};
use ringway_config::{BalancerKind, ClusterId, Listener, Snapshot};

use crate::drain::Drain;
use crate::pool::Pool;
use crate::proxy;

/// How often a worker drops expired idle upstream connections.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Everything one worker owns.
#[derive(Debug)]
pub struct Worker {
    /// Its index, for logs.
    pub id: usize,
    snapshot: Arc<Snapshot>,
    /// One per cluster; `None` where the endpoint set could not make one
    /// (which the config's validation rules out), so picks answer 503.
    balancers: RefCell<Vec<Option<RoundRobin>>>,
    /// Idle upstream connections.
    pub pool: Pool,
    /// Shutdown state.
    pub drain: Rc<Drain>,
}

impl Worker {
    /// Builds the worker's state for `snapshot`.
    pub fn new(id: usize, snapshot: Arc<Snapshot>) -> Worker {
        let balancers = snapshot
            .clusters
            .iter()
            .map(|c| {
                let weights: Vec<u32> = c.endpoints.iter().map(|e| e.weight).collect();
                match c.balancer {
                    BalancerKind::RoundRobin => RoundRobin::new(&weights).ok(),
                }
            })
            .collect();
        Worker {
            id,
            snapshot,
            balancers: RefCell::new(balancers),
            pool: Pool::default(),
            drain: Rc::new(Drain::default()),
        }
    }

    /// The snapshot this worker serves from.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Picks an endpoint of `cluster`.
    pub fn pick(&self, cluster: ClusterId) -> Option<EndpointId> {
        self.balancers
            .borrow_mut()
            .get_mut(cluster.0 as usize)?
            .as_mut()?
            .pick(|_| true)
    }
}

/// Runs a worker until `shutdown` fires and its in-flight requests are
/// done (or the drain deadline passes).
pub async fn run(
    worker: Rc<Worker>,
    listeners: Vec<(Rc<Listener>, TcpListener)>,
    shutdown: oneshot::Receiver<()>,
) {
    for (config, listener) in listeners {
        monoio::spawn(accept_loop(worker.clone(), config, listener));
    }
    monoio::spawn(sweep_loop(worker.clone()));
    // A dropped sender means the control thread is gone: drain as well.
    let _ = shutdown.await;
    worker.drain.start();
    let deadline = worker.snapshot.runtime.drain_timeout;
    if monoio::time::timeout(deadline, worker.drain.idle())
        .await
        .is_err()
    {
        eprintln!(
            "ringway: worker {}: drain deadline passed with {} request(s) in flight",
            worker.id,
            worker.drain.in_flight()
        );
    }
}

async fn accept_loop(worker: Rc<Worker>, config: Rc<Listener>, listener: TcpListener) {
    loop {
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    monoio::spawn(proxy::serve(worker.clone(), config.clone(), stream, peer));
                }
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    eprintln!("ringway: worker {}: accept on {}: {e}", worker.id, config.name);
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = worker.drain.started() => break,
        }
    }
    // Dropping the listener closes it: new connections are refused.
}

async fn sweep_loop(worker: Rc<Worker>) {
    while !worker.drain.is_draining() {
        monoio::time::sleep(SWEEP_INTERVAL).await;
        worker.pool.sweep();
    }
}
