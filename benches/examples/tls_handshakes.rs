//! Handshake load for `benches/tls/https.sh`: every connection makes one
//! full TLS handshake (the client keeps no sessions, so nothing resumes),
//! sends one `GET` with `Connection: close`, reads the answer until the
//! server closes, and starts over. wrk and h2load cannot do this: both
//! resume the previous session on reconnect (checked against nginx's
//! `$ssl_session_reused`), and `openssl s_time -new` spends ~0.65 ms of its
//! own CPU per handshake, more than any server here.
//!
//! To cost the client as little as possible it does not verify the
//! server's certificate nor its handshake signature (the server still
//! signs: that is what is being measured). Blocking sockets, one thread
//! per concurrent connection; meant to be pinned to one core.
//!
//! ```text
//! tls_handshakes ADDR [-c CONNS] [-d SECS] [--tls12] [--provider ring|aws-lc-rs]
//!                     [--host NAME] [--path PATH]
//! ```
//!
//! Prints one JSON object: handshakes completed with a full `200` answer,
//! errors, seconds, rate, and what the first handshake negotiated.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

struct Args {
    addr: SocketAddr,
    conns: usize,
    secs: f64,
    tls12: bool,
    provider: String,
    host: String,
    path: String,
}

fn usage(msg: &str) -> ! {
    eprintln!("{msg}");
    eprintln!(
        "usage: tls_handshakes ADDR [-c CONNS] [-d SECS] [--tls12] [--provider ring|aws-lc-rs] [--host NAME] [--path PATH]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:443"
            .parse()
            .unwrap_or_else(|_| usage("bad default")),
        conns: 8,
        secs: 10.0,
        tls12: false,
        provider: "ring".into(),
        host: "localhost".into(),
        path: "/".into(),
    };
    let mut addr = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "-c" => a.conns = value().parse().unwrap_or_else(|_| usage("bad -c")),
            "-d" => a.secs = value().parse().unwrap_or_else(|_| usage("bad -d")),
            "--tls12" => a.tls12 = true,
            "--provider" => a.provider = value(),
            "--host" => a.host = value(),
            "--path" => a.path = value(),
            _ if addr.is_none() && !arg.starts_with('-') => {
                addr = Some(arg.parse().unwrap_or_else(|_| usage("ADDR is ip:port")));
            }
            _ => usage(&format!("unknown argument {arg}")),
        }
    }
    a.addr = addr.unwrap_or_else(|| usage("ADDR missing"));
    a
}

/// Accepts any certificate and any handshake signature.
#[derive(Debug)]
struct NoVerify(Vec<SignatureScheme>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.clone()
    }
}

fn config(a: &Args) -> Arc<ClientConfig> {
    let provider: CryptoProvider = match a.provider.as_str() {
        "ring" => rustls::crypto::ring::default_provider(),
        "aws-lc-rs" => rustls::crypto::aws_lc_rs::default_provider(),
        other => usage(&format!("unknown provider {other}")),
    };
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let versions: &[&rustls::SupportedProtocolVersion] = if a.tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap_or_else(|e| usage(&format!("TLS versions: {e}")))
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(schemes)))
        .with_no_client_auth();
    // No session store: every connection is a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One connection: handshake, request, the whole answer. Returns what was
/// negotiated.
fn one(
    a: &Args,
    config: &Arc<ClientConfig>,
    name: &ServerName<'static>,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> Result<String, String> {
    let tcp = TcpStream::connect(a.addr).map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let conn = ClientConnection::new(config.clone(), name.clone()).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(req)
        .map_err(|e| format!("handshake/write: {e}"))?;
    buf.clear();
    match tls.read_to_end(buf) {
        Ok(_) => {}
        // A server that closes without close_notify: judged by the answer.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no complete response head")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") {
        return Err(format!(
            "answer: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    if len.is_some_and(|len| buf.len() - head_end - 4 != len) {
        return Err("short body".into());
    }
    let c = &tls.conn;
    Ok(format!(
        "\"protocol\": \"{:?}\", \"suite\": \"{:?}\", \"kx\": \"{:?}\"",
        c.protocol_version()
            .unwrap_or(rustls::ProtocolVersion::Unknown(0)),
        c.negotiated_cipher_suite().map(|s| s.suite()),
        c.negotiated_key_exchange_group().map(|g| g.name()),
    ))
}

fn main() {
    let a = Arc::new(args());
    let config = config(&a);
    let name = ServerName::try_from(a.host.clone()).unwrap_or_else(|_| usage("bad --host"));
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        a.path, a.host
    );
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let negotiated = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.secs);
    let threads: Vec<_> = (0..a.conns)
        .map(|_| {
            let (a, config, name, req) = (a.clone(), config.clone(), name.clone(), req.clone());
            let (ok, errors) = (ok.clone(), errors.clone());
            let (first_error, negotiated) = (first_error.clone(), negotiated.clone());
            std::thread::spawn(move || {
                let mut buf = Vec::with_capacity(4096);
                while Instant::now() < end {
                    match one(&a, &config, &name, req.as_bytes(), &mut buf) {
                        Ok(n) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            let mut g = negotiated.lock().unwrap_or_else(|e| e.into_inner());
                            if g.is_none() {
                                *g = Some(n);
                            }
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let mut g = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            if g.is_none() {
                                *g = Some(e);
                            }
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let secs = start.elapsed().as_secs_f64();
    let n = ok.load(Ordering::Relaxed);
    if let Some(e) = first_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
        eprintln!("first error: {e}");
    }
    let negotiated = negotiated
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_else(|| "\"protocol\": null".into());
    println!(
        "{{\"handshakes\": {n}, \"errors\": {}, \"secs\": {secs:.3}, \"rate\": {:.1}, {negotiated}}}",
        errors.load(Ordering::Relaxed),
        n as f64 / secs
    );
}
