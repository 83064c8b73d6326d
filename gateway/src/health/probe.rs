//! One check of one endpoint, over the cluster's own transport: a TCP
//! connection to the endpoint's address, the cluster's PROXY header, its
//! TLS (trust, name, client certificate, ALPN), then the kind's exchange:
//! a GET in HTTP/1.1 or HTTP/2, or `grpc.health.v1.Health/Check`.
//!
//! Everything a peer sends is untrusted: a malformed answer is a failed
//! check, never a panic.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use ringway_config::{HealthCheck, HealthKind, ProxyProtocol};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::grpc;

/// The most of a response head, or of a gRPC answer, a check reads.
const MOST: usize = 16 * 1024;

const USER_AGENT: &str = "ringway-health-check";

/// What checking one endpoint takes; rebuilt at each reload.
#[derive(Debug)]
pub(crate) struct Probe {
    /// The cluster's settings for its checks.
    pub(crate) check: HealthCheck,
    /// The cluster's connections start with a PROXY protocol header.
    pub(crate) proxy_protocol: Option<ProxyProtocol>,
    /// The cluster speaks HTTP/2 (an http check is a GET over h2).
    pub(crate) h2: bool,
    /// Plain TCP, or the cluster's TLS.
    pub(crate) transport: Transport,
    /// The `Host` (`:authority`) the check sends.
    pub(crate) authority: String,
}

/// How bytes reach an endpoint.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Plain TCP.
    Plain,
    /// TLS with the cluster's settings, verifying `name`.
    Tls {
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    },
    /// The cluster's TLS settings could not be built: every check fails,
    /// saying why.
    Broken(String),
}

impl Probe {
    /// One check of `addr`; `Err` says why it failed. The caller bounds
    /// the whole of it (connect, handshake, exchange) with the timeout.
    pub(crate) async fn once(&self, addr: SocketAddr) -> Result<(), String> {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        if let Some(version) = self.proxy_protocol {
            // Naming nobody (v2 LOCAL, v1 UNKNOWN): the connection is the
            // gateway's own.
            let header = crate::upstream::proxy_protocol::header(version, None);
            tcp.write_all(&header).await.map_err(|e| e.to_string())?;
        }
        if self.check.kind == HealthKind::Tcp {
            return Ok(());
        }
        match &self.transport {
            Transport::Plain => self.exchange(tcp, "http").await,
            Transport::Tls { config, name } => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                self.exchange(tls, "https").await
            }
            Transport::Broken(why) => Err(why.clone()),
        }
    }

    async fn exchange<S>(&self, io: S, scheme: &str) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match &self.check.kind {
            HealthKind::Tcp => Ok(()),
            HealthKind::Http { path } if self.h2 => {
                let request = self.request("GET", scheme, path)?;
                h2_exchange(io, request, None, |response, _| {
                    let status = response.status.as_u16();
                    passes(status)
                })
                .await
            }
            HealthKind::Http { path } => h1_get(io, &self.authority, path).await,
            HealthKind::Grpc { service } => {
                let mut request = self.request("POST", scheme, "/grpc.health.v1.Health/Check")?;
                let headers = request.headers_mut();
                headers.insert("content-type", "application/grpc".parse().map_err(no)?);
                headers.insert("te", "trailers".parse().map_err(no)?);
                let body = Bytes::from(grpc::request(service));
                h2_exchange(io, request, Some(body), grpc_verdict).await
            }
        }
    }

    /// A request for `path` with the check's authority, for h2.
    fn request(&self, method: &str, scheme: &str, path: &str) -> Result<http::Request<()>, String> {
        http::Request::builder()
            .method(method)
            .uri(format!("{scheme}://{}{path}", self.authority))
            .header("user-agent", USER_AGENT)
            .body(())
            .map_err(|e| format!("cannot build the request: {e}"))
    }
}

fn no(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A 2xx or 3xx passes.
fn passes(status: u16) -> Result<(), String> {
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(format!("answered {status}"))
    }
}

/// The authority a check sends to an endpoint written as `host` (an IPv6
/// literal without its brackets) on `port`.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A GET of `path` over HTTP/1.1; the answer's head decides.
async fn h1_get<S>(mut io: S, authority: &str, path: &str) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n"
    );
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    io.flush().await.map_err(|e| e.to_string())?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = io.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before answering".to_owned());
        }
        head.extend_from_slice(&buf[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(_)) => return passes(response.code.unwrap_or(0)),
            Ok(httparse::Status::Partial) if head.len() < MOST => {}
            _ => return Err("answered something that is not HTTP".to_owned()),
        }
    }
}

/// One request on a new HTTP/2 connection over `io`, its answer judged by
/// `verdict` from the response head and the whole (bounded) body and
/// trailers.
async fn h2_exchange<S, V>(
    io: S,
    request: http::Request<()>,
    body: Option<Bytes>,
    verdict: V,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    V: FnOnce(&http::response::Parts, Answer) -> Result<(), String>,
{
    let (send, connection) = h2::client::handshake(io)
        .await
        .map_err(|e| format!("HTTP/2: {e}"))?;
    let h2 = |e: h2::Error| format!("HTTP/2: {e}");
    let exchange = async move {
        let mut send = send.ready().await.map_err(h2)?;
        let (response, mut stream) = send.send_request(request, body.is_none()).map_err(h2)?;
        if let Some(body) = body {
            stream.send_data(body, true).map_err(h2)?;
        }
        let (head, mut recv) = response.await.map_err(h2)?.into_parts();
        let mut answer = Answer::default();
        if needs_body(&head) {
            while let Some(chunk) = recv.data().await {
                let chunk = chunk.map_err(h2)?;
                let _ = recv.flow_control().release_capacity(chunk.len());
                if answer.body.len() + chunk.len() > MOST {
                    return Err("answered too much".to_owned());
                }
                answer.body.extend_from_slice(&chunk);
            }
            answer.trailers = recv.trailers().await.map_err(h2)?;
        }
        verdict(&head, answer)
    };
    alongside(connection, exchange).await
}

/// What a gRPC answer carries beyond its head.
#[derive(Debug, Default)]
struct Answer {
    body: Vec<u8>,
    trailers: Option<http::HeaderMap>,
}

/// Only gRPC answers are read past their head: a GET's status is all an
/// http check needs.
fn needs_body(head: &http::response::Parts) -> bool {
    head.headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
        && !head.headers.contains_key("grpc-status")
}

/// SERVING with grpc-status 0 passes; anything else fails.
fn grpc_verdict(head: &http::response::Parts, answer: Answer) -> Result<(), String> {
    if head.status != http::StatusCode::OK {
        return Err(format!("answered {}", head.status.as_u16()));
    }
    // Trailers-only answers carry grpc-status in the head.
    let status = answer
        .trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| head.headers.get("grpc-status"));
    match status.map(|v| v.as_bytes()) {
        Some(b"0") => {}
        Some(code) => {
            let message = answer
                .trailers
                .as_ref()
                .and_then(|t| t.get("grpc-message"))
                .or_else(|| head.headers.get("grpc-message"))
                .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned())
                .unwrap_or_default();
            return Err(format!(
                "answered grpc-status {} {message}",
                String::from_utf8_lossy(code)
            ));
        }
        None => return Err("answered no grpc-status".to_owned()),
    }
    match grpc::response_status(&answer.body)? {
        grpc::SERVING => Ok(()),
        2 => Err("answered NOT_SERVING".to_owned()),
        other => Err(format!("answered serving status {other}")),
    }
}

/// Runs `work` while driving `connection` (h2's frames move only while the
/// connection is polled); `work`'s result is the answer. A connection that
/// fails first fails the check.
async fn alongside<C, W>(connection: C, work: W) -> Result<(), String>
where
    C: Future<Output = Result<(), h2::Error>>,
    W: Future<Output = Result<(), String>>,
{
    let (mut connection, mut work) = (pin!(connection), pin!(work));
    let mut open = true;
    poll_fn(move |cx| {
        if open && let Poll::Ready(done) = connection.as_mut().poll(cx) {
            open = false;
            if let Err(e) = done {
                return Poll::Ready(Err(format!("HTTP/2: {e}")));
            }
        }
        work.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authority_is_the_host_and_port_bracketed_for_ipv6() {
        assert_eq!(authority("api.test", 8443), "api.test:8443");
        assert_eq!(authority("127.0.0.1", 80), "127.0.0.1:80");
        assert_eq!(authority("::1", 80), "[::1]:80");
    }

    #[test]
    fn twos_and_threes_pass() {
        assert!(passes(200).is_ok() && passes(204).is_ok() && passes(302).is_ok());
        assert_eq!(passes(503), Err("answered 503".to_owned()));
        assert!(passes(101).is_err() && passes(404).is_err() && passes(0).is_err());
    }
}
