//! TLS both ways: termination (the per-worker rustls `ServerConfig`s, SNI
//! certificate choice, the server handshake) and origination to upstream
//! clusters (`ClientConfig`s, the name to verify, the client handshake).
//!
//! Each worker builds its own `ServerConfig` per TLS listener per
//! generation from the snapshot's checked material, with its own session-ID
//! cache (kept across generations, so a reload does not end resumption),
//! so no handshake takes a lock another core holds. The session-ticket key
//! is the one thing shared by all workers: a ticket issued on one core must
//! open on another, since the kernel spreads connections over the cores.
//!
//! The handshake is driven here rather than by `monoio_rustls::TlsAcceptor`
//! so that the verified client certificate can be read before the stream is
//! wrapped: every byte read is handed to rustls, none is left in between.
//! The client side uses the same driver and hands back the raw parts, so
//! that the caller wraps them for HTTP/1.1 or HTTP/2 as the ALPN says.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use ringway_config::{Tls, TlsVersion, UpstreamTls};
use rustls::pki_types::{InvalidDnsNameError, ServerName};
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, ClientConnection, ConnectionCommon, RootCertStore, ServerConfig,
    ServerConnection, SideData,
};

use crate::buffer::write_all;

/// The client stream of a TLS listener.
pub(crate) type TlsStream = monoio_rustls::ServerTlsStream<TcpStream>;

/// Session IDs remembered per worker per listener.
const SESSION_CACHE_SIZE: usize = 4096;

/// The process's session-ticket keys (`crate::tickets`: rotated, and
/// handed to the next process on a hot upgrade), shared by every worker
/// and every listener.
fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    static TICKETER: OnceLock<Arc<dyn ProducesTickets>> = OnceLock::new();
    if let Some(t) = TICKETER.get() {
        return Ok(t.clone());
    }
    let tickets = crate::tickets::tickets()
        .ok_or_else(|| rustls::Error::General("no random session-ticket key".to_owned()))?;
    let t: Arc<dyn ProducesTickets> = tickets;
    Ok(TICKETER.get_or_init(|| t).clone())
}

/// A worker's session-ID cache for one listener.
pub(crate) fn session_cache() -> Arc<dyn StoresServerSessions> {
    ServerSessionMemoryCache::new(SESSION_CACHE_SIZE)
}

/// The protocol versions from `min` up.
fn versions(min: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS12_UP: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match min {
        TlsVersion::Tls12 => &TLS12_UP,
        TlsVersion::Tls13 => &TLS13_ONLY,
    }
}

/// Builds one worker's `ServerConfig` for a listener.
pub(crate) fn server_config(
    tls: &Tls,
    cache: Arc<dyn StoresServerSessions>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(ringway_config::crypto_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(tls.min_version))?;
    let builder = match &tls.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let mut roots = RootCertStore::empty();
            for ca in &auth.roots {
                roots.add(ca.clone())?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(tls)));
    config.alpn_protocols = tls.alpn.clone();
    config.session_storage = cache;
    config.ticketer = ticketer()?;
    Ok(Arc::new(config))
}

/// Picks a certificate by SNI: an exact name first, then a wildcard one
/// label up, else the first certificate.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    fn new(tls: &Tls) -> SniResolver {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for c in &tls.certificates {
            for name in &c.names {
                // The first certificate naming a name wins.
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_owned()),
                    None => exact.entry(name.clone()),
                }
                .or_insert_with(|| c.key.clone());
            }
        }
        SniResolver {
            exact,
            wildcard,
            default: tls.certificates.first().map(|c| c.key.clone()),
        }
    }

    /// The certificate for `sni`: an exact name, else a one-label
    /// wildcard. A client that sends no name (one connecting by IP) gets the
    /// default; a name no certificate covers gets none, and the handshake
    /// fails with an alert rather than present a certificate for another
    /// name.
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        // rustls hands the name over lower-cased.
        if let Some(k) = self.exact.get(name) {
            return Some(k.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// A finished handshake: the stream, and the verified client identity.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// The TLS stream, ready for HTTP.
    pub stream: TlsStream,
    /// The client certificate's first URI SAN, else its first DNS SAN.
    pub identity: Option<String>,
}

/// Runs the server side of a handshake on `io`.
pub(crate) async fn handshake(
    mut io: TcpStream,
    config: Arc<ServerConfig>,
) -> io::Result<Accepted> {
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    drive(&mut io, &mut conn).await?;
    let identity = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| ringway_config::client_identity(leaf));
    Ok(Accepted {
        stream: TlsStream::new(io, conn),
        identity,
    })
}

/// Builds a `ClientConfig` for a cluster's endpoints. Sessions resume from
/// rustls's in-memory cache, which belongs to the returned config: build one
/// per worker so that no handshake waits on another core.
pub(crate) fn client_config(tls: &UpstreamTls) -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(ringway_config::crypto_provider());
    let mut roots = RootCertStore::empty();
    for ca in &tls.roots {
        roots.add(ca.clone())?;
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(tls.min_version))?
        .with_root_certificates(roots);
    let mut config = match &tls.client_identity {
        None => builder.with_no_client_auth(),
        Some(key) => {
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(key.clone())))
        }
    };
    config.alpn_protocols = tls.alpn.clone();
    Ok(Arc::new(config))
}

/// A number that tells clusters' TLS settings apart, so that a pooled
/// connection is only reused by a cluster that would have opened the same
/// one (same trust, name, client certificate and protocols). 0 is plain TCP.
pub(crate) fn fingerprint(tls: &UpstreamTls) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for root in &tls.roots {
        root.as_ref().hash(&mut h);
    }
    tls.server_name.hash(&mut h);
    if let Some(id) = &tls.client_identity {
        for c in &id.cert {
            c.as_ref().hash(&mut h);
        }
    }
    tls.alpn.hash(&mut h);
    (tls.min_version as u8).hash(&mut h);
    h.finish() | 1
}

/// The name to send (SNI) and verify for an endpoint written as
/// `endpoint_host`: the cluster's `server_name` if set, else the host
/// itself (an IP literal is verified against the certificate's IP SANs and
/// sends no SNI).
pub(crate) fn server_name_for(
    tls: &UpstreamTls,
    endpoint_host: &str,
) -> Result<ServerName<'static>, InvalidDnsNameError> {
    let name = tls.server_name.as_deref().unwrap_or(endpoint_host);
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    ServerName::try_from(name.to_owned())
}

/// Logs a failed upstream handshake, with rustls's reason: at most one
/// line per worker every ten seconds (a broken upstream would otherwise
/// log one per request); every failure answers 502 regardless.
pub(crate) fn log_upstream_failure(cluster: &str, addr: std::net::SocketAddr, error: &io::Error) {
    thread_local! {
        static LOGGED: std::cell::Cell<Option<std::time::Instant>> =
            const { std::cell::Cell::new(None) };
    }
    let now = std::time::Instant::now();
    let due = LOGGED.with(|last| {
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(10));
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        crate::say!(
            "ringway: cluster {cluster}: TLS handshake with {addr} failed: {error} \
             (further failures for 10s not logged)"
        );
    }
}

/// Runs the client side of a handshake on `io`, verifying the endpoint
/// as `name`. Returns the raw parts for the caller to wrap (the ALPN
/// protocol chosen is `conn.alpn_protocol()`); a refused handshake (an
/// untrusted certificate, a name mismatch) is `InvalidData` with rustls's
/// reason.
pub(crate) async fn connect(
    mut io: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<(TcpStream, ClientConnection)> {
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    drive(&mut io, &mut conn).await?;
    Ok((io, conn))
}

/// Drives a handshake, either side, until it is done.
async fn drive<D: SideData>(io: &mut TcpStream, conn: &mut ConnectionCommon<D>) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(4 * 1024);
    loop {
        while conn.wants_write() {
            out.clear();
            conn.write_tls(&mut out)?;
            write_all(io, &mut out).await?;
        }
        if !conn.is_handshaking() {
            break;
        }
        buf.clear();
        let (res, b) = io.read(buf).await;
        buf = b;
        if res? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // Everything read goes to rustls: application data that came
        // with the peer's last flight (or a server's session tickets)
        // waits in its buffers.
        let mut data = &buf[..];
        while !data.is_empty() {
            conn.read_tls(&mut data)?;
            if let Err(e) = conn.process_new_packets() {
                // Tell the peer why, if it still listens.
                out.clear();
                if conn.write_tls(&mut out).is_ok() {
                    let _ = write_all(io, &mut out).await;
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_prefers_exact_names_then_wildcards_and_refuses_unknown_names() {
        let key = |n: u8| Arc::new(CertifiedKey::new(vec![vec![n].into()], dummy_key()));
        let (a, b, c) = (key(1), key(2), key(3));
        let r = SniResolver {
            exact: HashMap::from([("api.example.com".to_owned(), b.clone())]),
            wildcard: HashMap::from([("example.com".to_owned(), c.clone())]),
            default: Some(a.clone()),
        };
        let cert = |k: Option<Arc<CertifiedKey>>| k.map(|k| k.cert[0].to_vec());
        assert_eq!(cert(r.pick(Some("api.example.com"))), Some(vec![2]));
        assert_eq!(cert(r.pick(Some("www.example.com"))), Some(vec![3]));
        // A wildcard covers one label only; unknown names get nothing.
        assert_eq!(cert(r.pick(Some("a.b.example.com"))), None);
        assert_eq!(cert(r.pick(Some("example.com"))), None);
        assert_eq!(cert(r.pick(Some("unknown.test"))), None);
        // No name at all (a client connecting by IP): the default.
        assert_eq!(cert(r.pick(None)), Some(vec![1]));
    }

    fn upstream(server_name: Option<&str>) -> UpstreamTls {
        UpstreamTls {
            roots: Vec::new(),
            server_name: server_name.map(str::to_owned),
            client_identity: None,
            min_version: TlsVersion::Tls12,
            alpn: vec![b"h2".to_vec()],
        }
    }

    #[test]
    fn server_names_come_from_the_override_else_the_endpoint_host() {
        let ip = |s: &str| ServerName::from(s.parse::<IpAddr>().unwrap());
        let dns = |s: &str| ServerName::try_from(s.to_owned()).unwrap();
        let plain = upstream(None);
        assert_eq!(
            server_name_for(&plain, "api.internal").unwrap(),
            dns("api.internal")
        );
        assert_eq!(server_name_for(&plain, "10.0.0.1").unwrap(), ip("10.0.0.1"));
        assert_eq!(server_name_for(&plain, "::1").unwrap(), ip("::1"));
        assert_eq!(server_name_for(&plain, "[::1]").unwrap(), ip("::1"));
        assert!(server_name_for(&plain, "not a name").is_err());
        let named = upstream(Some("api.example.com"));
        assert_eq!(
            server_name_for(&named, "10.0.0.1").unwrap(),
            dns("api.example.com")
        );
    }

    /// A CA and a leaf for `localhost` signed by it: (CA DER, leaf key).
    fn pki() -> (
        rustls::pki_types::CertificateDer<'static>,
        Arc<CertifiedKey>,
    ) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let provider = ringway_config::crypto_provider();
        let certified = CertifiedKey::from_der(vec![leaf.der().clone()], der, &provider).unwrap();
        (ca.der().clone(), Arc::new(certified))
    }

    /// Runs a TLS listener on 127.0.0.1:0 and one client handshake to it
    /// as `name`, trusting the listener's CA or another: the client's
    /// result and the ALPN it got.
    fn handshake_as(name: &str, trusted: bool) -> io::Result<Option<Vec<u8>>> {
        let (ca, key) = pki();
        let ca = if trusted { ca } else { pki().0 };
        let tls = Tls {
            certificates: vec![ringway_config::TlsCertificate {
                names: vec!["localhost".to_owned()],
                key,
            }],
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            min_version: TlsVersion::Tls12,
            client_auth: None,
            identity_header: None,
        };
        let server = server_config(&tls, session_cache()).unwrap();
        let mut up = upstream(None);
        up.roots = vec![ca];
        let client = client_config(&up).unwrap();
        let name = server_name_for(&up, name).unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let accept = monoio::spawn(async move {
                let (io, _) = listener.accept().await.unwrap();
                handshake(io, server).await.map(|_| ())
            });
            let io = TcpStream::connect(addr).await.unwrap();
            let result = connect(io, client, name).await;
            let _ = accept.await;
            result.map(|(_, conn)| conn.alpn_protocol().map(<[u8]>::to_vec))
        })
    }

    #[test]
    fn client_handshakes_verify_the_name_and_negotiate_alpn() {
        assert_eq!(
            handshake_as("localhost", true).unwrap(),
            Some(b"h2".to_vec())
        );
        // By IP the listener sends its default certificate, which names
        // localhost only: the client refuses it.
        let e = handshake_as("127.0.0.1", true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("not valid for name"), "{e}");
        let e = handshake_as("localhost", false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("invalid peer certificate"), "{e}");
    }

    fn dummy_key() -> Arc<dyn rustls::sign::SigningKey> {
        #[derive(Debug)]
        struct Never;
        impl rustls::sign::SigningKey for Never {
            fn choose_scheme(
                &self,
                _: &[rustls::SignatureScheme],
            ) -> Option<Box<dyn rustls::sign::Signer>> {
                None
            }
            fn algorithm(&self) -> rustls::SignatureAlgorithm {
                rustls::SignatureAlgorithm::ECDSA
            }
        }
        Arc::new(Never)
    }
}

/// A worker's TLS client settings for one cluster.
#[derive(Debug)]
pub(crate) struct ClientTls {
    /// The rustls configuration the worker connects with.
    pub(crate) config: Arc<ClientConfig>,
    /// Tells pooled connections of different settings apart.
    pub(crate) fingerprint: u64,
}
