//! `ringload serve`: a fast benchmark origin.
//!
//! One worker thread per `--workers`, each pinned to a core with its own
//! io_uring runtime and its own `SO_REUSEPORT` listener on the same port.
//! A plain connection is HTTP/1.1 (keep-alive, pipelining) unless its first
//! bytes are the HTTP/2 prior-knowledge preface, in which case it is h2c.
//! With a certificate every connection is TLS and ALPN picks h2 or
//! http/1.1.
//!
//! Every response carries `x-ringload-server: NAME`. `GET /__ringload/stats`
//! answers a JSON object of what the origin has received so far (that
//! request itself is not counted); the same object is printed on stdout
//! when the process stops on SIGINT or SIGTERM.

mod ctx;
mod h1;
mod h2;
mod stats;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use monoio::net::{TcpListener, TcpStream};
use monoio_compat::StreamWrapper;
use monoio_rustls::TlsAcceptor;

use self::ctx::Ctx;
pub use self::ctx::{STATS_PATH, ServeOptions};
pub use self::stats::{Stats, Totals};
use crate::buf::read_more;
use crate::{Error, Result, runtime};

/// A running origin.
#[derive(Debug)]
pub struct Origin {
    /// The address it listens on (with the real port when 0 was asked).
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<Stats>,
}

/// Binds every worker's listener, starts the workers and returns once all
/// of them run (or the first one that could not start says why).
pub fn start(opts: ServeOptions) -> Result<Origin> {
    if !(100..=999).contains(&opts.status) {
        return Err(Error::invalid(
            "status",
            opts.status.to_string(),
            "must be 100..=999",
        ));
    }
    let workers = opts.workers.max(1);
    let mut listeners = Vec::with_capacity(workers);
    let mut addr = opts.listen;
    for _ in 0..workers {
        let l = bind(addr)?;
        // Later workers bind the port the first one was given.
        addr = l
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))?;
        listeners.push(l);
    }
    let stats = Arc::new(Stats::new(workers));
    let cpus = runtime::allowed_cpus();
    let (ready_tx, ready_rx) = mpsc::channel();
    for (id, listener) in listeners.into_iter().enumerate() {
        let opts = opts.clone();
        let stats = stats.clone();
        let ready = ready_tx.clone();
        let cpu = cpus.get(id % cpus.len().max(1)).copied();
        std::thread::Builder::new()
            .name(format!("ringload-serve-{id}"))
            .spawn(move || worker(id, cpu, listener, opts, stats, ready))
            .map_err(|e| Error::io("spawning a worker thread", e))?;
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Runtime("a worker thread died while starting".into())),
        }
    }
    Ok(Origin { addr, stats })
}

fn bind(addr: SocketAddr) -> Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let ctx = |e| Error::io(format!("listening on {addr}"), e);
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(ctx)?;
    socket.set_reuse_address(true).map_err(ctx)?;
    socket.set_reuse_port(true).map_err(ctx)?;
    socket.set_nonblocking(true).map_err(ctx)?;
    socket.bind(&addr.into()).map_err(ctx)?;
    socket.listen(4096).map_err(ctx)?;
    Ok(socket.into())
}

fn worker(
    id: usize,
    cpu: Option<usize>,
    listener: std::net::TcpListener,
    opts: ServeOptions,
    stats: Arc<Stats>,
    ready: mpsc::Sender<Result<()>>,
) {
    if let Some(cpu) = cpu {
        runtime::pin_to(cpu);
    }
    let mut rt = match runtime::build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(Error::io("registering the listener", e)));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let acceptor = opts.tls.clone().map(TlsAcceptor::from);
        let head = h1::response_head(
            opts.status,
            &opts.name,
            opts.body_size,
            false,
            "application/octet-stream",
        );
        let ctx = Rc::new(Ctx::new(id, opts, stats, head));
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    monoio::spawn(connection(stream, acceptor.clone(), ctx.clone()));
                }
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    eprintln!("ringload serve: worker {id}: accept: {e}");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    });
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn connection(mut stream: TcpStream, acceptor: Option<TlsAcceptor>, ctx: Rc<Ctx>) {
    let _ = stream.set_nodelay(true);
    ctx.stats.connection(ctx.id);
    if let Some(acceptor) = acceptor {
        let Ok(tls) = acceptor.accept(stream).await else {
            ctx.stats.bad(ctx.id);
            return;
        };
        ctx.stats.tls_connection(ctx.id);
        if tls.alpn_protocol().as_deref() == Some(b"h2") {
            h2::serve(StreamWrapper::new(tls), ctx).await;
        } else {
            h1::serve(tls, Vec::with_capacity(16 * 1024), ctx).await;
        }
        return;
    }
    // Sniff for the h2 preface: read until the bytes either diverge from it
    // or hold all of it.
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let (res, b) = read_more(&mut stream, buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let n = buf.len().min(PREFACE.len());
        if buf[..n] != PREFACE[..n] || buf.len() >= PREFACE.len() {
            break;
        }
    }
    if buf.starts_with(PREFACE) {
        h2::serve(
            h2::Rewind::new(Bytes::from(buf), StreamWrapper::new(stream)),
            ctx,
        )
        .await;
    } else {
        h1::serve(stream, buf, ctx).await;
    }
}
