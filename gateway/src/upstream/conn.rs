//! A connection to an upstream endpoint: plain TCP or TLS, opened within
//! the cluster's connect timeout and counted against its limits.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, Split};
use monoio::net::TcpStream;
use monoio::time::{Instant, timeout};

use super::cluster::Tally;
use super::target::Try;
use crate::buffer::ReadBuf;
use crate::failure::Failure;
use crate::watch::WatchedSocket;

/// The byte stream to an upstream endpoint: plain TCP, or TLS when its
/// cluster says so.
#[derive(Debug)]
pub(crate) enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>),
}

impl crate::buffer::WaitReadable for UpstreamStream {
    /// For a plain socket, its readiness; over TLS at once (monoio-rustls
    /// does not lend its socket), so a TLS tunnel reads with a buffer
    /// posted.
    async fn readable(&mut self) -> std::io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => TcpStream::readable(s, false).await,
            UpstreamStream::Tls(_) => Ok(()),
        }
    }
}

// Both kinds may be read and written at once from two halves.
unsafe impl Split for UpstreamStream {}

impl AsyncReadRent for UpstreamStream {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.read(buf).await,
            UpstreamStream::Tls(s) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.readv(buf).await,
            UpstreamStream::Tls(s) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpstreamStream {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.write(buf).await,
            UpstreamStream::Tls(s) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpstreamStream::Plain(s) => s.writev(buf).await,
            UpstreamStream::Tls(s) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.flush().await,
            UpstreamStream::Tls(s) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            UpstreamStream::Plain(s) => s.shutdown().await,
            UpstreamStream::Tls(s) => s.shutdown().await,
        }
    }
}

/// A connection to an upstream endpoint and its read buffer.
#[derive(Debug)]
pub(crate) struct UpstreamConn {
    /// The socket.
    pub stream: UpstreamStream,
    /// Bytes read from it and not yet used.
    pub rbuf: ReadBuf,
    /// Taken from the pool rather than freshly connected: the upstream may
    /// have closed it meanwhile.
    pub reused: bool,
    /// Counts the connection against its cluster's limit while it lives.
    pub _tally: Option<Tally>,
    /// What a try must match to reuse it ([`Try::reuse_key`]): the TLS
    /// settings it was opened with and, with a PROXY protocol header, the
    /// client it names.
    pub key: super::target::ReuseKey,
    /// The socket's descriptor, to look for unasked bytes while idle
    /// (monoio-rustls does not lend its socket once wrapped).
    pub fd: RawFd,
    /// A plain connection's posted receive: while it waits for a response,
    /// and while it waits in the pool (see `crate::watch`).
    pub watched: WatchedSocket,
}

impl UpstreamConn {
    /// The socket, and what counts it against its cluster's limit (keep it
    /// as long as the socket); the read buffer is dropped.
    pub(crate) fn into_stream(self) -> (UpstreamStream, Option<Tally>) {
        (self.stream, self._tally)
    }

    /// Resolves when the upstream has sent something (or closed), leaving
    /// it for the next read: an early answer while the request's body
    /// still goes up. Over TLS it never does: monoio-rustls does not lend
    /// its socket, so an early answer from a TLS upstream is seen once the
    /// request body is sent, or its write fails.
    pub(crate) async fn answered(&self) -> std::io::Result<()> {
        match &self.stream {
            UpstreamStream::Plain(s) => self.watched.arrived(s).await,
            UpstreamStream::Tls(_) => std::future::pending().await,
        }
    }

    /// Posts a plain connection's receive as it goes idle in the pool.
    pub(crate) fn watch_idle(&mut self) {
        if let UpstreamStream::Plain(socket) = &self.stream {
            self.watched.watch(socket);
        }
    }

    /// Reads more of a response head into `rbuf`, growing it up to `max`
    /// bytes held: the count, 0 at the end of the stream.
    pub(crate) async fn read_head_bytes(&mut self, max: usize) -> std::io::Result<usize> {
        if let UpstreamStream::Plain(socket) = &self.stream {
            match self.watched.read(socket, &mut self.rbuf, max).await {
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
                read => return read,
            }
        }
        self.rbuf.fill(&mut self.stream, max).await
    }
}

/// Opens a new HTTP/1.1 connection to `to`'s endpoint.
pub(crate) async fn open(to: Try<'_>) -> Result<UpstreamConn, Failure> {
    if let Some(overflow) = to.state.connect_overflow() {
        return Err(Failure::Overflow(overflow));
    }
    let connecting = Tally::new(&to.state.breakers.pending);
    let started = Instant::now();
    let mut stream = connect(to.addr, to.cluster.connect_timeout).await?;
    let fd = stream.as_raw_fd();
    if let Some(version) = to.cluster.proxy_protocol {
        super::proxy_protocol::send(&mut stream, version, to.origin).await?;
    }
    let stream = match (to.tls, &to.cluster.tls) {
        (Some(tls), Some(settings)) => {
            let host = &to.cluster.endpoints[to.endpoint.0 as usize].host;
            let name = crate::tls::server_name_for(settings, host)
                .map_err(|_| Failure::Invalid("upstream TLS name is not valid"))?;
            let left = to.cluster.connect_timeout.saturating_sub(started.elapsed());
            let (io, conn) = timeout(left, crate::tls::connect(stream, tls.config.clone(), name))
                .await
                .map_err(|_| Failure::ConnectTimeout)?
                .map_err(|e| {
                    crate::tls::log_upstream_failure(&to.cluster.name, to.addr, &e);
                    Failure::TlsHandshake
                })?;
            UpstreamStream::Tls(Box::new(monoio_rustls::ClientTlsStream::new(io, conn)))
        }
        _ => UpstreamStream::Plain(stream),
    };
    drop(connecting);
    Ok(UpstreamConn {
        stream,
        rbuf: ReadBuf::new(),
        reused: false,
        _tally: Some(Tally::new(&to.state.breakers.connections)),
        key: to.reuse_key(),
        fd,
        watched: WatchedSocket::default(),
    })
}

/// Connects to an upstream endpoint within `limit`.
pub(crate) async fn connect(addr: SocketAddr, limit: Duration) -> Result<TcpStream, Failure> {
    match timeout(limit, TcpStream::connect_addr(addr)).await {
        Err(_) => Err(Failure::ConnectTimeout),
        Ok(Err(e)) => Err(Failure::Connect(e.kind())),
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}
