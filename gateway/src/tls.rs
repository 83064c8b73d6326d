//! TLS termination: the per-worker rustls `ServerConfig`s, SNI certificate
//! choice, and the handshake.
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

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, OnceLock};

use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use ringway_config::{Tls, TlsVersion};
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, ServerConnection};

use crate::buffer::write_all;

/// The client stream of a TLS listener.
pub type TlsStream = monoio_rustls::ServerTlsStream<TcpStream>;

/// Session IDs remembered per worker per listener.
const SESSION_CACHE_SIZE: usize = 4096;

/// The process's session-ticket key (rotated by rustls), shared by every
/// worker and every listener.
fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    static TICKETER: OnceLock<Arc<dyn ProducesTickets>> = OnceLock::new();
    if let Some(t) = TICKETER.get() {
        return Ok(t.clone());
    }
    let t = rustls::crypto::ring::Ticketer::new()?;
    Ok(TICKETER.get_or_init(|| t).clone())
}

/// A worker's session-ID cache for one listener.
pub fn session_cache() -> Arc<dyn StoresServerSessions> {
    ServerSessionMemoryCache::new(SESSION_CACHE_SIZE)
}

/// Builds one worker's `ServerConfig` for a listener.
pub fn server_config(
    tls: &Tls,
    cache: Arc<dyn StoresServerSessions>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_protocol_versions(versions)?;
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
pub struct Accepted {
    /// The TLS stream, ready for HTTP.
    pub stream: TlsStream,
    /// The client certificate's first URI SAN, else its first DNS SAN.
    pub identity: Option<String>,
}

/// Runs the server side of a handshake on `io`.
pub async fn handshake(mut io: TcpStream, config: Arc<ServerConfig>) -> io::Result<Accepted> {
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(4 * 1024);
    loop {
        while conn.wants_write() {
            out.clear();
            conn.write_tls(&mut out)?;
            write_all(&mut io, &mut out).await?;
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
        // with the client's last flight waits in its plaintext buffer.
        let mut data = &buf[..];
        while !data.is_empty() {
            conn.read_tls(&mut data)?;
            if let Err(e) = conn.process_new_packets() {
                // Tell the client why, if it still listens.
                out.clear();
                if conn.write_tls(&mut out).is_ok() {
                    let _ = write_all(&mut io, &mut out).await;
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
    let identity = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| ringway_config::client_identity(leaf));
    Ok(Accepted {
        stream: TlsStream::new(io, conn),
        identity,
    })
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
